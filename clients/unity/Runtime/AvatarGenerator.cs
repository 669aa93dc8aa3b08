#nullable enable
// Drop this on a GameObject with a SpriteRenderer, press Play: the avatar for `prompt`
// appears on the sprite. Everything else (events, cache, cancellation) is optional.
using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using Cysharp.Net.Http;
using UnityEngine;
using UnityEngine.Events;
using Proto = MoeAvatar.V1; // aliased: MoeAvatar.V1.TextureFormat would clash with UnityEngine.TextureFormat

namespace MoeAvatar.Client
{
    [AddComponentMenu("Moe Avatar/Avatar Generator")]
    public sealed class AvatarGenerator : MonoBehaviour
    {
        [Header("Server")]
        [Tooltip("http:// for plaintext (h2c), https:// for TLS.")]
        [SerializeField] private string serverAddress = "http://localhost:50051";
        [SerializeField] private float timeoutSeconds = 60f;

        [Header("Request")]
        [SerializeField, TextArea] private string prompt = "pink hair, twin tails";
        [SerializeField, Range(1, 16)] private int count = 1;
        [Tooltip("Negative: let the server pick a seed (no caching then).")]
        [SerializeField] private long seed = -1;
        [SerializeField, Range(0f, 2f)] private float psi = 0.7f;
        [Tooltip("Edge length in pixels (256: through the model's upscaler where it has one); 0 = the model's native resolution.")]
        [SerializeField] private int size = 256;
        [Tooltip("Raw RGBA8, bottom-up: no PNG decode on the device, 4x the bytes on the wire.")]
        [SerializeField] private bool rawRgba = false;
        [SerializeField] private FilterMode filterMode = FilterMode.Bilinear;

        [Header("Behaviour")]
        [SerializeField] private bool generateOnStart = true;
        [Tooltip("Optional: the first (best) texture is shown here as a sprite.")]
        [SerializeField] private SpriteRenderer? targetSprite;
        [SerializeField, Min(0)] private int cacheCapacity = 32;

        [Header("Events")]
        [Tooltip("0..1, for a progress bar.")]
        public UnityEvent<float> onProgress = new UnityEvent<float>();
        [Tooltip("Once per texture, best first.")]
        public UnityEvent<Texture2D> onTextureReady = new UnityEvent<Texture2D>();
        public UnityEvent onCompleted = new UnityEvent();
        public UnityEvent<string> onFailed = new UnityEvent<string>();

        /// <summary>Full progress details (stage, textures done), for code.</summary>
        public event Action<AvatarProgress>? ProgressChanged;

        /// <summary>What the model read from the last prompt it drew (cached avatars keep the one
        /// before); <c>LastReading.Summary()</c> is one line for a UI.</summary>
        public PromptReadingInfo LastReading { get; private set; } = PromptReadingInfo.None;

        /// <summary>Textures of the last completed request. Owned by this component: destroyed on the next request and OnDestroy.</summary>
        public IReadOnlyList<Texture2D> Textures => _textures;
        /// <summary>Server metadata (seed, score, model version) of each entry of <see cref="Textures"/>.</summary>
        public IReadOnlyList<AvatarTexture> Results => _results;
        public bool IsBusy => _cts != null;

        private AvatarClient? _client;
        private CancellationTokenSource? _cts;
        private LruCache<string, AvatarTexture>? _cache;
        // Model version the server resolved "newest" to, so later lookups can hit the cache.
        private string _resolvedModelVersion = "";
        private readonly List<Texture2D> _textures = new List<Texture2D>();
        private readonly List<AvatarTexture> _results = new List<AvatarTexture>();
        private Sprite? _sprite;

        public string Prompt { get => prompt; set => prompt = value; }
        /// <summary>Where the first texture is shown. The generator owns the Sprite it makes and destroys it on the next request.</summary>
        public SpriteRenderer? TargetSprite { get => targetSprite; set => targetSprite = value; }
        public long Seed { get => seed; set => seed = value; }

        private void Start()
        {
            if (generateOnStart) Generate();
        }

        private void OnDisable() => Cancel();

        private void OnDestroy()
        {
            Cancel();
            _client?.Dispose();
            _client = null;
            ReleaseTextures();
        }

        /// <summary>Fire-and-forget entry point for buttons and UnityEvents; errors go to onFailed.</summary>
        public void Generate() => _ = GenerateAsync(prompt);

        /// <summary>Cancels the request in flight, if any (its task ends with OperationCanceledException).</summary>
        public void Cancel()
        {
            _cts?.Cancel();
        }

        /// <summary>
        /// Requests avatars for <paramref name="text"/> and applies them. A new call cancels the
        /// previous one. Returns the textures, or an empty list when cancelled or failed
        /// (onFailed has the reason).
        /// </summary>
        public async Task<IReadOnlyList<Texture2D>> GenerateAsync(string text, CancellationToken cancellationToken = default)
        {
            Cancel();
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            _cts = cts;
            try
            {
                IReadOnlyList<AvatarTexture> avatars = TryFromCache(text) ?? await FetchAsync(text, cts.Token);
                cts.Token.ThrowIfCancellationRequested();
                Apply(avatars);
                onCompleted.Invoke();
                return _textures;
            }
            catch (OperationCanceledException)
            {
                return Array.Empty<Texture2D>(); // cancelled on purpose: not a failure
            }
            catch (Exception e)
            {
                Debug.LogException(e, this);
                onFailed.Invoke(e is Grpc.Core.RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : e.Message);
                return Array.Empty<Texture2D>();
            }
            finally
            {
                if (_cts == cts) _cts = null;
            }
        }

        private async Task<IReadOnlyList<AvatarTexture>> FetchAsync(string text, CancellationToken cancellationToken)
        {
            _client ??= new AvatarClient(serverAddress,
                // Unity has no HTTP/2: YetAnotherHttpHandler provides it. Http2Only = h2c prior knowledge,
                // needed for http:// addresses; harmless for https:// (ALPN picks h2).
                new YetAnotherHttpHandler { Http2Only = true },
                new AvatarClientOptions { Timeout = TimeSpan.FromSeconds(timeoutSeconds) });

            Proto.GenerateRequest request = BuildRequest(text);
            // Progress<T> posts to the SynchronizationContext it was created on: Unity's main thread.
            var progress = new Progress<AvatarProgress>(p =>
            {
                ProgressChanged?.Invoke(p);
                onProgress.Invoke(p.Fraction);
            });
            AvatarResult result = await _client.GenerateAsync(request, progress, cancellationToken);
            _resolvedModelVersion = result.ModelVersion;
            LastReading = result.Reading;
            foreach (AvatarTexture avatar in result.Textures)
                if (avatar.Seed.HasValue) Cache()?.Set(KeyFor(text, avatar.Seed.Value, result.ModelVersion), avatar);
            return result.Textures;
        }

        private Proto.GenerateRequest BuildRequest(string text) => AvatarClient.CreateRequest(
            text, count,
            seed: seed >= 0 ? (ulong)seed : (ulong?)null,
            psi: psi,
            format: rawRgba ? Proto.TextureFormat.Rgba8 : Proto.TextureFormat.Png,
            // Unity's LoadRawTextureData expects the bottom row first; PNG is always top-down.
            rowOrder: rawRgba ? Proto.RowOrder.BottomUp : Proto.RowOrder.TopDown,
            size: (uint)Mathf.Max(0, size));

        // With an explicit seed, texture i is Generate(seed + i, count = 1): look each one up.
        private IReadOnlyList<AvatarTexture>? TryFromCache(string text)
        {
            LruCache<string, AvatarTexture>? cache = Cache();
            if (cache == null || seed < 0 || _resolvedModelVersion.Length == 0) return null;
            var hits = new List<AvatarTexture>(count);
            for (int i = 0; i < count; i++)
            {
                string key = KeyFor(text, (ulong)seed + (ulong)i, _resolvedModelVersion);
                if (!cache.ContainsKey(key)) return null;
                hits.Add(cache.Get(key));
            }
            return hits;
        }

        private string KeyFor(string text, ulong textureSeed, string modelVersion) => AvatarCacheKey.For(
            text, textureSeed, psi, "", modelVersion,
            rawRgba ? AvatarImageFormat.Rgba8 : AvatarImageFormat.Png,
            rawRgba ? AvatarRowOrder.BottomUp : AvatarRowOrder.TopDown, (uint)Mathf.Max(0, size));

        // The cache holds bytes, not Texture2Ds, so evicting never breaks a sprite in use.
        private LruCache<string, AvatarTexture>? Cache()
            => cacheCapacity <= 0 ? null : _cache ??= new LruCache<string, AvatarTexture>(cacheCapacity);

        private void Apply(IReadOnlyList<AvatarTexture> avatars)
        {
            ReleaseTextures();
            foreach (AvatarTexture avatar in avatars)
            {
                Texture2D texture = ToTexture2D(avatar, filterMode);
                _textures.Add(texture);
                _results.Add(avatar);
                onTextureReady.Invoke(texture);
            }
            if (targetSprite != null && _textures.Count > 0)
            {
                Texture2D first = _textures[0];
                // pixelsPerUnit = width: the avatar is one world unit wide whatever its resolution.
                _sprite = Sprite.Create(first, new Rect(0, 0, first.width, first.height), new Vector2(0.5f, 0.5f), first.width);
                targetSprite.sprite = _sprite;
            }
        }

        /// <summary>Decodes one avatar into a new Texture2D (the caller owns it: Destroy it when done).</summary>
        public static Texture2D ToTexture2D(AvatarTexture avatar, FilterMode filterMode = FilterMode.Bilinear)
        {
            Texture2D texture;
            switch (avatar.Format)
            {
                case AvatarImageFormat.Png:
                    // LoadImage replaces size and format with the PNG's own.
                    texture = new Texture2D(2, 2, UnityEngine.TextureFormat.RGBA32, false);
                    if (!ImageConversion.LoadImage(texture, avatar.Data, markNonReadable: false))
                    {
                        Release(texture);
                        throw new InvalidOperationException($"texture {avatar.Index}: not a valid PNG");
                    }
                    break;
                case AvatarImageFormat.Rgba8:
                    texture = new Texture2D(avatar.Width, avatar.Height, UnityEngine.TextureFormat.RGBA32, false);
                    texture.LoadRawTextureData(avatar.RowOrder == AvatarRowOrder.BottomUp ? avatar.Data : FlipRows(avatar.Data, avatar.Width, avatar.Height));
                    texture.Apply(false);
                    break;
                default:
                    throw new NotSupportedException($"Unity cannot decode {avatar.Format} at run time; request PNG or RGBA8");
            }
            texture.name = avatar.Seed.HasValue ? $"avatar-{avatar.Seed.Value}" : $"avatar-frame-{avatar.Index}";
            texture.filterMode = filterMode;
            texture.wrapMode = TextureWrapMode.Clamp;
            return texture;
        }

        private static byte[] FlipRows(byte[] rgba, int width, int height)
        {
            int stride = width * 4;
            var flipped = new byte[rgba.Length];
            for (int y = 0; y < height; y++)
                Buffer.BlockCopy(rgba, y * stride, flipped, (height - 1 - y) * stride, stride);
            return flipped;
        }

        /// <summary>Destroy in play mode, DestroyImmediate in the editor (where Destroy is not allowed).</summary>
        public static void Release(UnityEngine.Object obj)
        {
            if (Application.isPlaying) Destroy(obj);
            else DestroyImmediate(obj);
        }

        private void ReleaseTextures()
        {
            if (_sprite != null) Release(_sprite);
            _sprite = null;
            foreach (Texture2D texture in _textures) Release(texture);
            _textures.Clear();
            _results.Clear();
        }
    }
}
