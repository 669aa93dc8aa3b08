// Quickstart: add this to an empty GameObject and press Play. It adds a SpriteRenderer and
// an AvatarGenerator, then logs progress; the avatar shows up at the origin.
using MoeAvatar.Client;
using UnityEngine;

public sealed class QuickstartAvatar : MonoBehaviour
{
    [SerializeField, TextArea] private string prompt = "silver hair, headphones, happy";

    private void Awake()
    {
        gameObject.AddComponent<SpriteRenderer>();
        // AddComponent runs Awake at once but Start only next frame, so configuring here is in time.
        AvatarGenerator generator = gameObject.AddComponent<AvatarGenerator>();
        generator.Prompt = prompt;
        generator.ProgressChanged += p => Debug.Log($"avatar: {p}");
        generator.onFailed.AddListener(message => Debug.LogError($"avatar failed: {message}"));
        generator.onCompleted.AddListener(() =>
        {
            AvatarTexture first = generator.Results[0];
            Debug.Log($"avatar ready: seed {first.Seed}, CLIP score {first.ClipScore:F2}, model {first.Model} {first.ModelVersion}");
            GetComponent<SpriteRenderer>().sprite = Sprite.Create(generator.Textures[0],
                new Rect(0, 0, first.Width, first.Height), new Vector2(0.5f, 0.5f), first.Width);
        });
    }
}
