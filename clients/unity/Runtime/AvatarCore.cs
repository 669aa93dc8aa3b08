// Engine-agnostic building blocks with no gRPC, Protobuf or UnityEngine dependency:
// the texture assembler (chunk reassembly + SHA-256 check), the result types, the retry
// backoff and an LRU cache. Written in plain C# 7.3 so that Mono's `mcs` compiles it too
// (tests/test_clients_static.py runs it that way, without Unity). mcs knows no `#nullable`
// and no `?`/`!` annotations on reference types, so this file has none, and it is also
// written to raise no warnings where nullable checking is on (the Godot project).
using System;
using System.Collections.Generic;
using System.Security.Cryptography;

namespace MoeAvatar.Client
{
    /// <summary>Encoding of <see cref="AvatarTexture.Data"/> (mirrors moeavatar.v1.TextureFormat).</summary>
    public enum AvatarImageFormat
    {
        Png = 1,
        /// <summary>Raw RGBA8, width * 4 bytes per row, no padding.</summary>
        Rgba8 = 2,
        WebP = 3,
    }

    /// <summary>Row order of raw RGBA8 data (mirrors moeavatar.v1.RowOrder). PNG/WebP are always top-down.</summary>
    public enum AvatarRowOrder
    {
        TopDown = 1,
        /// <summary>First row is the bottom of the image: what Unity's LoadRawTextureData expects.</summary>
        BottomUp = 2,
    }

    /// <summary>The bytes and metadata of a texture header, copied out of the protobuf message.</summary>
    public sealed class TextureHeaderInfo
    {
        public TextureHeaderInfo(uint index, uint width, uint height, AvatarImageFormat format, AvatarRowOrder rowOrder,
            ulong? seed, float clipScore, ulong totalBytes, byte[] sha256, float t)
        {
            Index = index;
            Width = width;
            Height = height;
            Format = format;
            RowOrder = rowOrder;
            Seed = seed;
            ClipScore = clipScore;
            TotalBytes = totalBytes;
            Sha256 = sha256 ?? new byte[0];
            T = t;
        }

        public uint Index { get; private set; }
        public uint Width { get; private set; }
        public uint Height { get; private set; }
        public AvatarImageFormat Format { get; private set; }
        public AvatarRowOrder RowOrder { get; private set; }
        public ulong? Seed { get; private set; }
        public float ClipScore { get; private set; }
        public ulong TotalBytes { get; private set; }
        public byte[] Sha256 { get; private set; }
        public float T { get; private set; }
    }

    /// <summary>One finished, checksum-verified texture.</summary>
    public sealed class AvatarTexture
    {
        public AvatarTexture(TextureHeaderInfo header, byte[] data, string model, string modelVersion, float psi, string requestId)
        {
            Index = (int)header.Index;
            Width = (int)header.Width;
            Height = (int)header.Height;
            Format = header.Format;
            RowOrder = header.RowOrder;
            Seed = header.Seed;
            ClipScore = header.ClipScore;
            T = header.T;
            Data = data;
            Model = model;
            ModelVersion = modelVersion;
            Psi = psi;
            RequestId = requestId;
        }

        /// <summary>Position in the response (best first when reranking; frame number for Interpolate).</summary>
        public int Index { get; private set; }
        public int Width { get; private set; }
        public int Height { get; private set; }
        public AvatarImageFormat Format { get; private set; }
        public AvatarRowOrder RowOrder { get; private set; }
        /// <summary>Noise seed: Generate(prompt, seed, count = 1) with the same psi and model version reproduces it.
        /// Null for Interpolate's middle frames.</summary>
        public ulong? Seed { get; private set; }
        /// <summary>CLIP prompt/image similarity, -1..1, higher is a better match.</summary>
        public float ClipScore { get; private set; }
        /// <summary>Interpolate only: 0 at the start endpoint, 1 at the end.</summary>
        public float T { get; private set; }
        public byte[] Data { get; private set; }
        public string Model { get; private set; }
        public string ModelVersion { get; private set; }
        public float Psi { get; private set; }
        public string RequestId { get; private set; }
    }

    /// <summary>What the model read for one attribute family (the proto's FamilyReading).</summary>
    public sealed class FamilyReadingInfo
    {
        public FamilyReadingInfo(string family, bool stated, float statedProbability, string value, float valueProbability)
        {
            Family = family;
            Stated = stated;
            StatedProbability = statedProbability;
            Value = value;
            ValueProbability = valueProbability;
        }

        /// <summary>e.g. "hair_color".</summary>
        public string Family { get; private set; }
        /// <summary>True: the prompt states this family; false: each seed draws it at random.</summary>
        public bool Stated { get; private set; }
        public float StatedProbability { get; private set; }
        /// <summary>The value read, e.g. "pink"; head accessories joined by " + ", or "none".</summary>
        public string Value { get; private set; }
        public float ValueProbability { get; private set; }
    }

    /// <summary>
    /// What the model read from a prompt, one entry per family: lets a UI show which words were
    /// understood ("pirate" was not) and which families are left to chance.
    /// </summary>
    public sealed class PromptReadingInfo
    {
        public PromptReadingInfo(IReadOnlyList<FamilyReadingInfo> families)
        {
            Families = families;
        }

        /// <summary>The reading of a model that does not report one.</summary>
        public static readonly PromptReadingInfo None = new PromptReadingInfo(new FamilyReadingInfo[0]);

        public IReadOnlyList<FamilyReadingInfo> Families { get; private set; }

        /// <summary>
        /// One line, as the Python CLI prints it: "hair_color=pink (0.98), hairstyle=twin tails (0.95);
        /// random: bangs, eye_color".
        /// </summary>
        public string Summary()
        {
            if (Families.Count == 0) return "the model does not report what it read";
            var stated = new List<string>();
            var open = new List<string>();
            foreach (FamilyReadingInfo f in Families)
            {
                if (f.Stated)
                    stated.Add(f.Family + "=" + f.Value + " (" + f.ValueProbability.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture) + ")");
                else
                    open.Add(f.Family);
            }
            string line = stated.Count > 0 ? string.Join(", ", stated) : "nothing stated";
            return open.Count > 0 ? line + "; random: " + string.Join(", ", open) : line;
        }
    }

    /// <summary>Everything one Generate / Interpolate stream produced.</summary>
    public sealed class AvatarResult
    {
        public AvatarResult(string requestId, string model, string modelVersion, ulong seed, float psi,
            IReadOnlyList<AvatarTexture> textures, float serverSeconds, PromptReadingInfo reading)
        {
            RequestId = requestId;
            Model = model;
            ModelVersion = modelVersion;
            Seed = seed;
            Psi = psi;
            Textures = textures;
            ServerSeconds = serverSeconds;
            Reading = reading;
        }

        /// <summary>What the model read from the prompt; no families when the model does not report
        /// it (a bundle without a reader, or an Interpolate stream, which has no prompt of its own).</summary>
        public PromptReadingInfo Reading { get; private set; }

        public string RequestId { get; private set; }
        public string Model { get; private set; }
        public string ModelVersion { get; private set; }
        /// <summary>Base seed actually used (the request's, or the one the server picked).</summary>
        public ulong Seed { get; private set; }
        public float Psi { get; private set; }
        public IReadOnlyList<AvatarTexture> Textures { get; private set; }
        public float ServerSeconds { get; private set; }
    }

    /// <summary>The stream broke the protocol or the bytes do not match the header's size or SHA-256.</summary>
    public sealed class AvatarStreamException : Exception
    {
        public AvatarStreamException(string message) : base(message) { }
    }

    /// <summary>
    /// Reassembles the texture stream: a header, then its chunks in offset order, the final
    /// one flagged <c>last</c>; verifies size and SHA-256 before handing the texture out.
    /// Feed it in stream order; it is not thread-safe (one stream, one reader).
    /// </summary>
    public sealed class TextureAssembler
    {
        // A 1024x1024 RGBA8 texture is 4 MiB; refuse absurd header sizes before allocating.
        public const ulong MaxTextureBytes = 64UL * 1024 * 1024;

        private readonly List<AvatarTexture> _textures = new List<AvatarTexture>();
        private TextureHeaderInfo _header = new TextureHeaderInfo(0, 0, 0, AvatarImageFormat.Png, AvatarRowOrder.TopDown, null, 0, 0, new byte[0], 0);
        private bool _inTexture;
        private byte[] _buffer = new byte[0];
        private ulong _received;
        private string _requestId = "", _model = "", _modelVersion = "";
        private ulong _seed;
        private float _psi;
        private float _serverSeconds;
        private PromptReadingInfo _reading = PromptReadingInfo.None;

        public bool Started { get; private set; }
        public bool Done { get; private set; }
        /// <summary>Texture count announced by the Started message.</summary>
        public int ExpectedTextures { get; private set; }
        /// <summary>Bytes received for the texture in progress (for progress bars).</summary>
        public ulong BytesReceived { get { return _received; } }
        public IReadOnlyList<AvatarTexture> Textures { get { return _textures; } }

        public void OnStarted(string requestId, string model, string modelVersion, ulong seed, float psi, uint textureCount)
        {
            _requestId = requestId;
            _model = model;
            _modelVersion = modelVersion;
            _seed = seed;
            _psi = psi;
            ExpectedTextures = (int)textureCount;
            Started = true;
        }

        public void OnHeader(TextureHeaderInfo header)
        {
            if (_inTexture)
                throw new AvatarStreamException(string.Format("texture {0}: header for texture {1} before its last chunk", _header.Index, header.Index));
            if (header.TotalBytes > MaxTextureBytes)
                throw new AvatarStreamException(string.Format("texture {0}: {1} bytes is over the {2} byte limit", header.Index, header.TotalBytes, MaxTextureBytes));
            if (header.Sha256.Length != 32)
                throw new AvatarStreamException(string.Format("texture {0}: sha256 has {1} bytes, expected 32", header.Index, header.Sha256.Length));
            _header = header;
            _inTexture = true;
            _buffer = new byte[header.TotalBytes];
            _received = 0;
        }

        /// <summary>Adds one chunk; returns true when it completed a texture (then see <see cref="LastTexture"/>).</summary>
        public bool OnChunk(uint textureIndex, ulong offset, byte[] data, bool last)
        {
            if (!_inTexture || textureIndex != _header.Index)
                throw new AvatarStreamException(string.Format("chunk for texture {0} without its header", textureIndex));
            if (offset != _received)
                throw new AvatarStreamException(string.Format("texture {0}: chunk at offset {1}, expected {2}", textureIndex, offset, _received));
            if (_received + (ulong)data.Length > _header.TotalBytes)
                throw new AvatarStreamException(string.Format("texture {0}: more bytes than the {1} the header announced", textureIndex, _header.TotalBytes));
            Buffer.BlockCopy(data, 0, _buffer, (int)_received, data.Length);
            _received += (ulong)data.Length;
            if (!last)
                return false;

            if (_received != _header.TotalBytes)
                throw new AvatarStreamException(string.Format("texture {0}: got {1} bytes, header says {2}", textureIndex, _received, _header.TotalBytes));
            if (!BytesEqual(ComputeSha256(_buffer), _header.Sha256))
                throw new AvatarStreamException(string.Format("texture {0}: SHA-256 of the received bytes does not match the header", textureIndex));
            _textures.Add(new AvatarTexture(_header, _buffer, _model, _modelVersion, _psi, _requestId));
            _inTexture = false;
            _buffer = new byte[0];
            _received = 0;
            return true;
        }

        public AvatarTexture LastTexture
        {
            get
            {
                if (_textures.Count == 0) throw new InvalidOperationException("no texture completed yet");
                return _textures[_textures.Count - 1];
            }
        }

        public void OnDone(uint textureCount, float serverSeconds)
        {
            if (_inTexture)
                throw new AvatarStreamException(string.Format("stream done while texture {0} was incomplete", _header.Index));
            if (textureCount != _textures.Count)
                throw new AvatarStreamException(string.Format("server sent {0} textures but Done says {1}", _textures.Count, textureCount));
            _serverSeconds = serverSeconds;
            Done = true;
        }

        /// <summary>The stream's reading event (sent once, after the prompt is encoded).</summary>
        public void OnReading(PromptReadingInfo reading)
        {
            _reading = reading;
        }

        /// <summary>The result; throws if the stream ended before its Done message.</summary>
        public AvatarResult ToResult()
        {
            if (!Done)
                throw new AvatarStreamException("stream ended before its Done message");
            return new AvatarResult(_requestId, _model, _modelVersion, _seed, _psi, _textures.ToArray(), _serverSeconds, _reading);
        }

        public static byte[] ComputeSha256(byte[] data)
        {
            using (var sha = SHA256.Create())
                return sha.ComputeHash(data);
        }

        private static bool BytesEqual(byte[] a, byte[] b)
        {
            if (a.Length != b.Length) return false;
            for (int i = 0; i < a.Length; i++)
                if (a[i] != b[i]) return false;
            return true;
        }
    }

    /// <summary>Exponential backoff with jitter for retrying UNAVAILABLE.</summary>
    public sealed class RetryPolicy
    {
        /// <summary>Total tries including the first; 1 disables retries.</summary>
        public int MaxAttempts = 4;
        public TimeSpan InitialBackoff = TimeSpan.FromMilliseconds(200);
        public TimeSpan MaxBackoff = TimeSpan.FromSeconds(5);
        public double Multiplier = 2.0;

        /// <summary>
        /// Delay before retry number <paramref name="attempt"/> (0 = first retry):
        /// a random value in [cap/2, cap], cap = min(MaxBackoff, InitialBackoff * Multiplier^attempt).
        /// The random half keeps a crowd of clients that lost the server at the same moment
        /// from reconnecting in lockstep.
        /// </summary>
        public TimeSpan DelayFor(int attempt, Random random)
        {
            double cap = Math.Min(MaxBackoff.TotalMilliseconds, InitialBackoff.TotalMilliseconds * Math.Pow(Multiplier, attempt));
            return TimeSpan.FromMilliseconds(cap / 2 + random.NextDouble() * cap / 2);
        }
    }

    /// <summary>
    /// Cache keys: equal keys give identical pixels (the proto's reproducibility rule: same
    /// prompt + seed + psi + model version + output options). A plain string keeps it simple.
    /// </summary>
    public static class AvatarCacheKey
    {
        public static string For(string prompt, ulong seed, float psi, string model, string modelVersion,
            AvatarImageFormat format, AvatarRowOrder rowOrder, uint size)
        {
            // The server trims the prompt, so "cat ears " and "cat ears" are the same avatar.
            // "R" round-trips the float exactly; the invariant culture keeps '.' on every locale.
            return string.Join("\n", new[]
            {
                model ?? "", modelVersion ?? "", seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
                psi.ToString("R", System.Globalization.CultureInfo.InvariantCulture), format.ToString(),
                rowOrder.ToString(), size.ToString(System.Globalization.CultureInfo.InvariantCulture), (prompt ?? "").Trim(),
            });
        }
    }

    /// <summary>A small least-recently-used cache. Not thread-safe: use it from one thread (Unity's main thread).</summary>
    public sealed class LruCache<TKey, TValue>
    {
        private readonly Dictionary<TKey, LinkedListNode<KeyValuePair<TKey, TValue>>> _map;
        private readonly LinkedList<KeyValuePair<TKey, TValue>> _order = new LinkedList<KeyValuePair<TKey, TValue>>();
        private readonly Action<TValue> _onEvict;

        public LruCache(int capacity) : this(capacity, delegate { }) { }

        /// <param name="onEvict">Called for values pushed out, replaced or cleared, e.g. to free a GPU texture.</param>
        public LruCache(int capacity, Action<TValue> onEvict)
        {
            if (capacity < 1) throw new ArgumentOutOfRangeException("capacity");
            Capacity = capacity;
            _onEvict = onEvict;
            _map = new Dictionary<TKey, LinkedListNode<KeyValuePair<TKey, TValue>>>(capacity);
        }

        public int Capacity { get; private set; }
        public int Count { get { return _map.Count; } }

        public bool ContainsKey(TKey key) { return _map.ContainsKey(key); }

        /// <summary>The value for <paramref name="key"/>, now the most recently used; KeyNotFoundException if absent.</summary>
        public TValue Get(TKey key)
        {
            var node = _map[key];
            _order.Remove(node);
            _order.AddFirst(node);
            return node.Value.Value;
        }

        public void Set(TKey key, TValue value)
        {
            LinkedListNode<KeyValuePair<TKey, TValue>> old;
            if (_map.TryGetValue(key, out old))
            {
                _order.Remove(old);
                _map.Remove(key);
                if (!ReferenceEquals(old.Value.Value, value)) _onEvict(old.Value.Value);
            }
            _map[key] = _order.AddFirst(new KeyValuePair<TKey, TValue>(key, value));
            while (_map.Count > Capacity)
            {
                var lru = _order.Last;
                if (lru == null) break;
                _order.RemoveLast();
                _map.Remove(lru.Value.Key);
                _onEvict(lru.Value.Value);
            }
        }

        public void Clear()
        {
            foreach (var pair in _order) _onEvict(pair.Value);
            _order.Clear();
            _map.Clear();
        }
    }
}
