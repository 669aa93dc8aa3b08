// Quickstart: add this to an empty GameObject and press Play. It adds a SpriteRenderer and
// an AvatarGenerator, then logs progress; the avatar shows up at the origin. The generator
// owns the Sprite and Texture2D it makes and destroys them on the next request, so
// regenerating (call Generate() again) leaks nothing.
using MoeAvatar.Client;
using UnityEngine;

public sealed class QuickstartAvatar : MonoBehaviour
{
    [SerializeField, TextArea] private string prompt = "silver hair, headphones, happy";

    private void Awake()
    {
        SpriteRenderer target = gameObject.AddComponent<SpriteRenderer>();
        // AddComponent runs Awake at once but Start only next frame, so configuring here is in time.
        AvatarGenerator generator = gameObject.AddComponent<AvatarGenerator>();
        generator.Prompt = prompt;
        generator.TargetSprite = target;
        generator.ProgressChanged += p => Debug.Log($"avatar: {p}");
        generator.onFailed.AddListener(message => Debug.LogError($"avatar failed: {message}"));
        generator.onCompleted.AddListener(() =>
        {
            AvatarTexture first = generator.Results[0];
            // Seeds are uint64: in proto JSON (the HTTP bridge) send them as strings, "seed": "7".
            Debug.Log($"avatar ready: seed {first.Seed}, CLIP score {first.ClipScore:F2}, model {first.Model} {first.ModelVersion}");
        });
    }
}
