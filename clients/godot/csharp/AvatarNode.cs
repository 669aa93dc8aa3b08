#nullable enable
// A Godot 4 (.NET, desktop) node that turns a prompt into ImageTextures over gRPC.
// Add it to a scene, set Prompt (and optionally Target), call Generate() or tick GenerateOnReady.
using System;
using System.Threading;
using System.Threading.Tasks;
using Godot;
using MoeAvatar.Client;
using Proto = MoeAvatar.V1;

namespace MoeAvatarGodot;

[GlobalClass]
public partial class AvatarNode : Node
{
    [Signal] public delegate void ProgressEventHandler(float fraction, string stage);
    /// <summary>textures: ImageTexture per avatar, best first; infos: seed (string), clip_score, model, model_version each.</summary>
    [Signal] public delegate void CompletedEventHandler(Godot.Collections.Array<ImageTexture> textures, Godot.Collections.Array<Godot.Collections.Dictionary> infos);
    [Signal] public delegate void FailedEventHandler(string message);
    /// <summary>What the model read from the prompt, one line (PromptReadingInfo.Summary), before Completed.</summary>
    [Signal] public delegate void PromptReadEventHandler(string summary);
    [Signal] public delegate void CancelledEventHandler();

    [Export] public string ServerAddress { get; set; } = "http://localhost:50051";
    [Export(PropertyHint.MultilineText)] public string Prompt { get; set; } = "pink hair, twin tails";
    [Export(PropertyHint.Range, "1,16")] public int Count { get; set; } = 1;
    /// <summary>Negative: the server picks a seed.</summary>
    [Export] public long Seed { get; set; } = -1;
    [Export(PropertyHint.Range, "0,2,0.05")] public float Psi { get; set; } = 0.7f;
    /// <summary>Raw RGBA8 (no PNG decode) instead of PNG.</summary>
    [Export] public bool RawRgba { get; set; }
    [Export] public float TimeoutSeconds { get; set; } = 60f;
    [Export] public bool GenerateOnReady { get; set; } = true;
    /// <summary>Optional: the first (best) texture is shown here.</summary>
    [Export] public Sprite2D? Target { get; set; }

    private AvatarClient? _client;
    private CancellationTokenSource? _cts;

    public override void _Ready()
    {
        if (GenerateOnReady) Generate();
    }

    public override void _ExitTree()
    {
        Cancel();
        _client?.Dispose();
        _client = null;
    }

    /// <summary>Starts a request (cancelling the one in flight); results arrive through the signals.</summary>
    public void Generate() => _ = GenerateAsync();

    public void Cancel() => _cts?.Cancel();

    public async Task GenerateAsync()
    {
        Cancel();
        using var cts = new CancellationTokenSource();
        _cts = cts;
        // .NET 5+ speaks h2c to http:// addresses with the default SocketsHttpHandler: no extra handler needed.
        _client ??= new AvatarClient(ServerAddress, options: new AvatarClientOptions { Timeout = TimeSpan.FromSeconds(TimeoutSeconds) });
        // Created on the main thread, so Report() runs there (Godot's SynchronizationContext) and signals are safe.
        var progress = new Progress<AvatarProgress>(p => EmitSignal(SignalName.Progress, p.Fraction, p.Stage.ToString()));
        try
        {
            Proto.GenerateRequest request = AvatarClient.CreateRequest(Prompt, Count,
                Seed >= 0 ? (ulong)Seed : null, Psi,
                RawRgba ? Proto.TextureFormat.Rgba8 : Proto.TextureFormat.Png,
                Proto.RowOrder.TopDown); // Godot images are top-down
            AvatarResult result = await _client.GenerateAsync(request, progress, cts.Token);

            var textures = new Godot.Collections.Array<ImageTexture>();
            var infos = new Godot.Collections.Array<Godot.Collections.Dictionary>();
            foreach (AvatarTexture avatar in result.Textures)
            {
                textures.Add(ImageTexture.CreateFromImage(ToImage(avatar)));
                infos.Add(new Godot.Collections.Dictionary
                {
                    ["seed"] = avatar.Seed?.ToString() ?? "",   // string: uint64 does not fit a Variant int
                    ["clip_score"] = avatar.ClipScore,
                    ["model"] = avatar.Model,
                    ["model_version"] = avatar.ModelVersion,
                });
            }
            if (Target != null && textures.Count > 0) Target.Texture = textures[0];
            EmitSignal(SignalName.PromptRead, result.Reading.Summary());
            EmitSignal(SignalName.Completed, textures, infos);
        }
        catch (OperationCanceledException)
        {
            EmitSignal(SignalName.Cancelled);
        }
        catch (Exception e)
        {
            EmitSignal(SignalName.Failed, e is Grpc.Core.RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : e.Message);
        }
        finally
        {
            if (_cts == cts) _cts = null;
        }
    }

    public static Image ToImage(AvatarTexture avatar)
    {
        switch (avatar.Format)
        {
            case AvatarImageFormat.Rgba8:
                return Image.CreateFromData(avatar.Width, avatar.Height, false, Image.Format.Rgba8, avatar.Data);
            case AvatarImageFormat.WebP:
            {
                var image = new Image();
                if (image.LoadWebpFromBuffer(avatar.Data) != Error.Ok) throw new InvalidOperationException("bad WebP");
                return image;
            }
            default:
            {
                var image = new Image();
                if (image.LoadPngFromBuffer(avatar.Data) != Error.Ok) throw new InvalidOperationException("bad PNG");
                return image;
            }
        }
    }
}
