#nullable enable
// Engine-agnostic async client for moeavatar.v1.AvatarService over Grpc.Net.Client.
// No UnityEngine here: the Godot C# sample compiles this same file (see its .csproj).
using System;
using System.Collections.Generic;
using System.Net.Http;
using System.Threading;
using System.Threading.Tasks;
using Grpc.Core;
using Grpc.Net.Client;
using Proto = MoeAvatar.V1;

namespace MoeAvatar.Client
{
    /// <summary>A progress report: the server's stage plus how much texture data has arrived.</summary>
    public readonly struct AvatarProgress
    {
        public AvatarProgress(Proto.Stage stage, float elapsedSeconds, int texturesDone, int textureCount, float fraction)
        {
            Stage = stage;
            ElapsedSeconds = elapsedSeconds;
            TexturesDone = texturesDone;
            TextureCount = textureCount;
            Fraction = fraction;
        }

        public Proto.Stage Stage { get; }
        /// <summary>Server seconds since it accepted the request.</summary>
        public float ElapsedSeconds { get; }
        public int TexturesDone { get; }
        public int TextureCount { get; }
        /// <summary>Rough overall progress 0..1, for a progress bar.</summary>
        public float Fraction { get; }

        public override string ToString() => $"{Stage} {Fraction:P0} ({TexturesDone}/{TextureCount} textures, {ElapsedSeconds:F1}s)";
    }

    public sealed class AvatarClientOptions
    {
        /// <summary>Deadline of one call (each retry gets a fresh one). Generation on CPU can take seconds.</summary>
        public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);
        public RetryPolicy Retry { get; set; } = new RetryPolicy();
        /// <summary>
        /// Status codes worth retrying. UNAVAILABLE (server restarting, connection dropped) by
        /// default; the proto also suggests retrying RESOURCE_EXHAUSTED (queue full) with backoff.
        /// </summary>
        public ISet<StatusCode> RetryOn { get; set; } = new HashSet<StatusCode> { StatusCode.Unavailable };
        /// <summary>Sent as "authorization: Bearer ..." when set.</summary>
        public string? BearerToken { get; set; }
    }

    /// <summary>
    /// Async client for AvatarService. Create one per server and reuse it (it owns an HTTP/2
    /// connection); dispose it when done. Thread-safe for concurrent calls.
    /// </summary>
    public sealed class AvatarClient : IDisposable
    {
        private readonly GrpcChannel _channel;
        private readonly bool _ownsChannel;
        private readonly AvatarClientOptions _options;
        private readonly Random _random = new Random();

        /// <param name="address">e.g. "http://localhost:50051" (plaintext h2c) or "https://avatars.example.com".</param>
        /// <param name="handler">
        /// The HTTP handler. Unity: a YetAnotherHttpHandler (Unity has no HTTP/2 of its own);
        /// .NET 5+ / Godot: null uses SocketsHttpHandler.
        /// </param>
        public AvatarClient(string address, HttpMessageHandler? handler = null, AvatarClientOptions? options = null)
            : this(GrpcChannel.ForAddress(address, new GrpcChannelOptions
            {
                HttpHandler = handler,
                DisposeHttpClient = true,
                // Report our own cancellations as OperationCanceledException, like the rest of .NET.
                ThrowOperationCanceledOnCancellation = true,
            }), options, ownsChannel: true)
        {
        }

        /// <summary>Wraps a channel you configured yourself; it is not disposed with the client.</summary>
        public AvatarClient(GrpcChannel channel, AvatarClientOptions? options = null) : this(channel, options, ownsChannel: false)
        {
        }

        private AvatarClient(GrpcChannel channel, AvatarClientOptions? options, bool ownsChannel)
        {
            _channel = channel;
            _ownsChannel = ownsChannel;
            _options = options ?? new AvatarClientOptions();
            Raw = new Proto.AvatarService.AvatarServiceClient(channel);
        }

        /// <summary>The generated stub, for anything this wrapper does not cover.</summary>
        public Proto.AvatarService.AvatarServiceClient Raw { get; }

        public void Dispose()
        {
            if (_ownsChannel) _channel.Dispose();
        }

        /// <summary>A GenerateRequest with the common knobs; null seed/psi leave the choice to the server.</summary>
        public static Proto.GenerateRequest CreateRequest(string prompt, int count = 1, ulong? seed = null, float? psi = null,
            Proto.TextureFormat format = Proto.TextureFormat.Png, Proto.RowOrder rowOrder = Proto.RowOrder.TopDown, uint size = 256,
            string model = "", string modelVersion = "")
        {
            var request = new Proto.GenerateRequest
            {
                Prompt = prompt,
                Count = (uint)count,
                Output = new Proto.OutputOptions { Format = format, RowOrder = rowOrder, Size = size },
                Model = model,
                ModelVersion = modelVersion,
            };
            // proto3 `optional`: only set when given, so the server can tell "unset" from 0.
            if (seed.HasValue) request.Seed = seed.Value;
            if (psi.HasValue) request.Psi = psi.Value;
            return request;
        }

        /// <summary>Generates avatars; completes when every texture arrived and passed its SHA-256 check.</summary>
        public Task<AvatarResult> GenerateAsync(Proto.GenerateRequest request, IProgress<AvatarProgress>? progress = null,
            CancellationToken cancellationToken = default)
            => StreamAsync(options => Raw.Generate(request, options), progress, cancellationToken);

        /// <summary>Morph frames between two (prompt, seed) endpoints; AvatarTexture.T tells each frame's position.</summary>
        public Task<AvatarResult> InterpolateAsync(Proto.InterpolateRequest request, IProgress<AvatarProgress>? progress = null,
            CancellationToken cancellationToken = default)
            => StreamAsync(options => Raw.Interpolate(request, options), progress, cancellationToken);

        public Task<Proto.ListModelsResponse> ListModelsAsync(CancellationToken cancellationToken = default)
            => UnaryAsync(options => Raw.ListModelsAsync(new Proto.ListModelsRequest(), options), cancellationToken);

        public Task<Proto.ModelInfo> GetModelInfoAsync(string model = "", string modelVersion = "", CancellationToken cancellationToken = default)
            => UnaryAsync(options => Raw.GetModelInfoAsync(new Proto.GetModelInfoRequest { Model = model, ModelVersion = modelVersion }, options),
                cancellationToken);

        public async Task<float[]> EncodeTextAsync(string prompt, string model = "", CancellationToken cancellationToken = default)
        {
            Proto.EncodeTextResponse response = await UnaryAsync(
                options => Raw.EncodeTextAsync(new Proto.EncodeTextRequest { Prompt = prompt, Model = model }, options),
                cancellationToken).ConfigureAwait(false);
            var embedding = new float[response.Embedding.Count];
            response.Embedding.CopyTo(embedding, 0);
            return embedding;
        }

        /// <summary>
        /// What the model reads from <paramref name="prompt"/> (EncodeText's reading), without drawing:
        /// the families the prompt states and those left to chance. No families for a model that
        /// does not report it (ModelInfo.ReadsPrompts false).
        /// </summary>
        public async Task<PromptReadingInfo> ReadPromptAsync(string prompt, string model = "", CancellationToken cancellationToken = default)
        {
            Proto.EncodeTextResponse response = await UnaryAsync(
                options => Raw.EncodeTextAsync(new Proto.EncodeTextRequest { Prompt = prompt, Model = model }, options),
                cancellationToken).ConfigureAwait(false);
            return ToReadingInfo(response.Reading);
        }

        /// <summary>
        /// Opens an Edit session (see AvatarEditSession). No deadline: a creator UI keeps it open
        /// for minutes; cancel the token or dispose the call to end it. Not retried.
        /// </summary>
        public AsyncDuplexStreamingCall<Proto.EditRequest, Proto.EditResponse> OpenEdit(CancellationToken cancellationToken)
            => Raw.Edit(new CallOptions(Headers(), cancellationToken: cancellationToken));

        // ---------------------------------------------------------------------------------------

        internal Metadata Headers()
        {
            var headers = new Metadata();
            if (!string.IsNullOrEmpty(_options.BearerToken)) headers.Add("authorization", "Bearer " + _options.BearerToken);
            return headers;
        }

        private CallOptions NewCallOptions(CancellationToken cancellationToken)
            => new CallOptions(Headers(), DateTime.UtcNow + _options.Timeout, cancellationToken);

        private bool ShouldRetry(RpcException e, int attempt, CancellationToken cancellationToken)
            => _options.RetryOn.Contains(e.StatusCode) && attempt + 1 < _options.Retry.MaxAttempts && !cancellationToken.IsCancellationRequested;

        private async Task<T> UnaryAsync<T>(Func<CallOptions, AsyncUnaryCall<T>> call, CancellationToken cancellationToken)
        {
            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    using AsyncUnaryCall<T> pending = call(NewCallOptions(cancellationToken));
                    return await pending.ResponseAsync.ConfigureAwait(false);
                }
                catch (RpcException e) when (ShouldRetry(e, attempt, cancellationToken))
                {
                    await Task.Delay(_options.Retry.DelayFor(attempt, _random), cancellationToken).ConfigureAwait(false);
                }
            }
        }

        private async Task<AvatarResult> StreamAsync(Func<CallOptions, AsyncServerStreamingCall<Proto.GenerateResponse>> start,
            IProgress<AvatarProgress>? progress, CancellationToken cancellationToken)
        {
            for (int attempt = 0; ; attempt++)
            {
                var assembler = new TextureAssembler();
                bool received = false;
                try
                {
                    using AsyncServerStreamingCall<Proto.GenerateResponse> call = start(NewCallOptions(cancellationToken));
                    while (await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
                    {
                        received = true;
                        Feed(assembler, call.ResponseStream.Current, progress);
                    }
                    return assembler.ToResult();
                }
                // Retry only while nothing arrived: a half-received stream is not replayed.
                catch (RpcException e) when (!received && ShouldRetry(e, attempt, cancellationToken))
                {
                    await Task.Delay(_options.Retry.DelayFor(attempt, _random), cancellationToken).ConfigureAwait(false);
                }
            }
        }

        /// <summary>Feeds one stream message to the assembler and reports progress. Also used by AvatarEditSession.</summary>
        internal static void Feed(TextureAssembler assembler, Proto.GenerateResponse message, IProgress<AvatarProgress>? progress)
        {
            switch (message.EventCase)
            {
                case Proto.GenerateResponse.EventOneofCase.Started:
                    Proto.Started started = message.Started;
                    assembler.OnStarted(started.RequestId, started.Model, started.ModelVersion, started.Seed, started.Psi, started.TextureCount);
                    break;
                case Proto.GenerateResponse.EventOneofCase.Progress:
                    Proto.Progress p = message.Progress;
                    progress?.Report(new AvatarProgress(p.Stage, p.ElapsedSeconds, assembler.Textures.Count, assembler.ExpectedTextures,
                        StageFraction(p.Stage)));
                    break;
                case Proto.GenerateResponse.EventOneofCase.Texture:
                    assembler.OnHeader(ToHeaderInfo(message.Texture));
                    break;
                case Proto.GenerateResponse.EventOneofCase.Chunk:
                    Proto.TextureChunk chunk = message.Chunk;
                    if (assembler.OnChunk(chunk.TextureIndex, chunk.Offset, chunk.Data.ToByteArray(), chunk.Last) && progress != null)
                    {
                        // Texture streaming is the last 30% of the bar.
                        int done = assembler.Textures.Count, total = Math.Max(1, assembler.ExpectedTextures);
                        progress.Report(new AvatarProgress(Proto.Stage.EncodingTextures, 0, done, assembler.ExpectedTextures,
                            0.7f + 0.3f * done / total));
                    }
                    break;
                case Proto.GenerateResponse.EventOneofCase.Done:
                    assembler.OnDone(message.Done.TextureCount, message.Done.ElapsedSeconds);
                    break;
                case Proto.GenerateResponse.EventOneofCase.Reading:
                    assembler.OnReading(ToReadingInfo(message.Reading));
                    break;
            }
        }

        /// <summary>The proto's PromptReading as the engine-agnostic PromptReadingInfo (none: no families).</summary>
        public static PromptReadingInfo ToReadingInfo(Proto.PromptReading? reading)
        {
            if (reading == null) return PromptReadingInfo.None;
            var families = new List<FamilyReadingInfo>(reading.Families.Count);
            foreach (Proto.FamilyReading f in reading.Families)
                families.Add(new FamilyReadingInfo(f.Family, f.Stated, f.StatedProbability, f.Value, f.ValueProbability));
            return new PromptReadingInfo(families);
        }

        private static float StageFraction(Proto.Stage stage) => stage switch
        {
            Proto.Stage.Queued => 0.05f,
            Proto.Stage.EncodingText => 0.1f,
            Proto.Stage.Generating => 0.2f,
            Proto.Stage.Scoring => 0.5f,
            Proto.Stage.EncodingTextures => 0.7f,
            _ => 0f,
        };

        internal static TextureHeaderInfo ToHeaderInfo(Proto.TextureHeader header) => new TextureHeaderInfo(
            header.Index, header.Width, header.Height,
            header.Format switch
            {
                Proto.TextureFormat.Rgba8 => AvatarImageFormat.Rgba8,
                Proto.TextureFormat.Webp => AvatarImageFormat.WebP,
                _ => AvatarImageFormat.Png, // UNSPECIFIED means PNG
            },
            header.RowOrder == Proto.RowOrder.BottomUp ? AvatarRowOrder.BottomUp : AvatarRowOrder.TopDown,
            header.HasSeed ? header.Seed : (ulong?)null,
            header.ClipScore, header.TotalBytes, header.Sha256.ToByteArray(), header.T);
    }
}
