#nullable enable
// A live avatar creator: every change of the InputField or the psi Slider is sent over one
// Edit stream (debounced); only the answer to the newest request reaches the RawImage.
using System;
using MoeAvatar.Client;
using Cysharp.Net.Http;
using UnityEngine;
using UnityEngine.UI;

public sealed class LiveCreatorExample : MonoBehaviour
{
    [SerializeField] private string serverAddress = "http://localhost:50051";
    [SerializeField] private InputField? promptField;
    [SerializeField] private Slider? psiSlider;      // 0..2
    [SerializeField] private RawImage? preview;
    [SerializeField] private Text? status;

    private AvatarClient? _client;
    private AvatarEditSession? _session;
    private Texture2D? _shown;

    private void OnEnable()
    {
        _client = new AvatarClient(serverAddress, new YetAnotherHttpHandler { Http2Only = true });
        _session = new AvatarEditSession(_client, TimeSpan.FromMilliseconds(300)); // created on the main thread: events arrive there
        _session.ProgressChanged += p => SetStatus(p.ToString());
        _session.RequestFailed += (code, message) => SetStatus($"error {code}: {message}");
        _session.SessionFailed += e => SetStatus($"connection lost ({e.Message}); keep typing to reconnect");
        _session.ResultReady += result =>
        {
            if (_shown != null) AvatarGenerator.Release(_shown);
            _shown = AvatarGenerator.ToTexture2D(result.Textures[0]);
            if (preview != null) preview.texture = _shown;
            SetStatus($"seed {result.Seed}, {result.ServerSeconds:F2}s");
        };
        promptField?.onValueChanged.AddListener(_ => Send());
        psiSlider?.onValueChanged.AddListener(_ => Send());
    }

    private void OnDisable()
    {
        promptField?.onValueChanged.RemoveAllListeners();
        psiSlider?.onValueChanged.RemoveAllListeners();
        _session?.Dispose();   // cancels the stream: the server stops working for us
        _client?.Dispose();
        if (_shown != null) AvatarGenerator.Release(_shown);
    }

    private void Send()
    {
        string text = promptField != null ? promptField.text : "";
        if (_session == null || string.IsNullOrWhiteSpace(text)) return;
        // A fixed seed keeps the same "character" while the prompt changes.
        _session.Update(AvatarClient.CreateRequest(text, count: 1, seed: 7, psi: psiSlider != null ? psiSlider.value : 0.7f));
    }

    private void SetStatus(string text)
    {
        if (status != null) status.text = text;
    }
}
