#nullable enable
// Live creator UI over the bidirectional Edit RPC: call Update() on every keystroke or slider
// move; the newest request (after a short debounce) is sent on one long-lived stream, the
// server cancels older work, and anything that answers an older sequence is dropped here.
// Engine-agnostic: events are raised on the SynchronizationContext that created the session
// (Unity's or Godot's main thread).
using System;
using System.Threading;
using System.Threading.Tasks;
using Grpc.Core;
using Proto = MoeAvatar.V1;

namespace MoeAvatar.Client
{
    public sealed class AvatarEditSession : IDisposable
    {
        private readonly AvatarClient _client;
        private readonly TimeSpan _debounce;
        private readonly SynchronizationContext? _context;
        private readonly CancellationTokenSource _lifetime = new CancellationTokenSource();
        private readonly SemaphoreSlim _sendLock = new SemaphoreSlim(1, 1); // one writer at a time on the request stream
        private readonly object _gate = new object();
        private AsyncDuplexStreamingCall<Proto.EditRequest, Proto.EditResponse>? _call;
        private CancellationTokenSource? _pendingSend;
        private ulong _sequence;   // last sequence handed out (strictly increasing per session, as the proto asks)
        private long _newest;      // newest sequence sent; read by the receive loop (Interlocked: two threads)

        /// <summary>The newest request's textures, checksum-verified. Never raised for a superseded request.</summary>
        public event Action<AvatarResult>? ResultReady;
        public event Action<AvatarProgress>? ProgressChanged;
        /// <summary>The newest request was rejected in-band (google.rpc code, message), e.g. an empty prompt; the session goes on.</summary>
        public event Action<int, string>? RequestFailed;
        /// <summary>The stream itself broke (server gone, ...). The next Update() opens a new one.</summary>
        public event Action<Exception>? SessionFailed;

        /// <param name="debounce">Quiet time after the last Update() before sending; 250 ms feels live without flooding the server.</param>
        public AvatarEditSession(AvatarClient client, TimeSpan? debounce = null)
        {
            _client = client;
            _debounce = debounce ?? TimeSpan.FromMilliseconds(250);
            _context = SynchronizationContext.Current;
        }

        /// <summary>Sequence of the newest request sent so far (0 before the first).</summary>
        public ulong NewestSequence => (ulong)Interlocked.Read(ref _newest);

        /// <summary>Schedules <paramref name="request"/>; a later Update() within the debounce time replaces it.</summary>
        public void Update(Proto.GenerateRequest request)
        {
            if (_lifetime.IsCancellationRequested) throw new ObjectDisposedException(nameof(AvatarEditSession));
            _pendingSend?.Cancel();
            _pendingSend?.Dispose();
            _pendingSend = CancellationTokenSource.CreateLinkedTokenSource(_lifetime.Token);
            _ = SendAfterDebounceAsync(request.Clone(), _pendingSend.Token);
        }

        public void Dispose()
        {
            if (_lifetime.IsCancellationRequested) return;
            _pendingSend?.Cancel();
            _lifetime.Cancel(); // cancels the call: the server drops whatever it was doing for us
            lock (_gate) { _call?.Dispose(); _call = null; }
        }

        private async Task SendAfterDebounceAsync(Proto.GenerateRequest request, CancellationToken token)
        {
            try
            {
                await Task.Delay(_debounce, token).ConfigureAwait(false);
                await _sendLock.WaitAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return; // superseded by a newer Update(), or disposed
            }
            try
            {
                AsyncDuplexStreamingCall<Proto.EditRequest, Proto.EditResponse> call = EnsureCall();
                ulong sequence = ++_sequence;
                Interlocked.Exchange(ref _newest, (long)sequence); // before writing: the answer may come back at once
                await call.RequestStream.WriteAsync(new Proto.EditRequest { Sequence = sequence, Request = request }).ConfigureAwait(false);
            }
            catch (Exception e) when (!_lifetime.IsCancellationRequested)
            {
                DropCall();
                Post(() => SessionFailed?.Invoke(e));
            }
            catch (Exception)
            {
                // Disposed while writing: nothing to report.
            }
            finally
            {
                _sendLock.Release();
            }
        }

        private AsyncDuplexStreamingCall<Proto.EditRequest, Proto.EditResponse> EnsureCall()
        {
            lock (_gate)
            {
                if (_call != null) return _call;
                _call = _client.OpenEdit(_lifetime.Token);
                _ = ReceiveAsync(_call);
                return _call;
            }
        }

        private void DropCall()
        {
            lock (_gate) { _call?.Dispose(); _call = null; }
        }

        private async Task ReceiveAsync(AsyncDuplexStreamingCall<Proto.EditRequest, Proto.EditResponse> call)
        {
            var assembler = new TextureAssembler();
            ulong current = 0; // sequence the assembler is collecting
            try
            {
                while (await call.ResponseStream.MoveNext(_lifetime.Token).ConfigureAwait(false))
                {
                    Proto.EditResponse response = call.ResponseStream.Current;
                    ulong sequence = response.Sequence;
                    if (sequence < NewestSequence) continue; // stale: the user has typed since
                    if (sequence != current)
                    {
                        current = sequence;
                        assembler = new TextureAssembler();
                    }
                    switch (response.EventCase)
                    {
                        case Proto.EditResponse.EventOneofCase.Superseded:
                            break; // terminal for a request a newer one replaced; already stale here
                        case Proto.EditResponse.EventOneofCase.Error:
                            Proto.EditError error = response.Error;
                            Post(() => { if (sequence == NewestSequence) RequestFailed?.Invoke(error.Code, error.Message); });
                            break;
                        case Proto.EditResponse.EventOneofCase.Response:
                            try
                            {
                                AvatarClient.Feed(assembler, response.Response, new PostedProgress(this, sequence));
                            }
                            catch (AvatarStreamException e)
                            {
                                // 15 = DATA_LOSS: corrupt texture for this request only; the stream goes on.
                                Post(() => { if (sequence == NewestSequence) RequestFailed?.Invoke(15, e.Message); });
                                assembler = new TextureAssembler();
                                break;
                            }
                            if (assembler.Done)
                            {
                                AvatarResult result = assembler.ToResult();
                                // Checked again on the main thread: a newer Update() may have happened meanwhile.
                                Post(() => { if (sequence == NewestSequence) ResultReady?.Invoke(result); });
                            }
                            break;
                    }
                }
            }
            catch (Exception e) when (!_lifetime.IsCancellationRequested && !(e is OperationCanceledException))
            {
                Post(() => SessionFailed?.Invoke(e));
            }
            catch (Exception)
            {
                // Disposed: the cancellation ends the loop.
            }
            finally
            {
                lock (_gate)
                {
                    if (_call == call) _call = null; // the next Update() reopens
                }
                call.Dispose();
            }
        }

        private void Post(Action action)
        {
            if (_context == null) action();
            else _context.Post(_ => action(), null);
        }

        /// <summary>Reports progress on the session's context, only while its request is still the newest.</summary>
        private sealed class PostedProgress : IProgress<AvatarProgress>
        {
            private readonly AvatarEditSession _session;
            private readonly ulong _sequence;

            public PostedProgress(AvatarEditSession session, ulong sequence)
            {
                _session = session;
                _sequence = sequence;
            }

            public void Report(AvatarProgress value) => _session.Post(() =>
            {
                if (_sequence == _session.NewestSequence) _session.ProgressChanged?.Invoke(value);
            });
        }
    }
}
