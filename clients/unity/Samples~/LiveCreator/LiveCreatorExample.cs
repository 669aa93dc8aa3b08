#nullable enable
// A live avatar creator: every change of the InputField or the psi Slider is sent over one
// Edit stream (debounced); only the answer to the newest request reaches the RawImage.
// Add it to an empty GameObject in an empty scene and press Play: when its UI fields are not
// assigned it builds a Canvas with a prompt field, a psi slider, a preview and a status line
// (uGUI DefaultControls) and an EventSystem if the scene has none.
using System;
using MoeAvatar.Client;
using Cysharp.Net.Http;
using UnityEngine;
using UnityEngine.EventSystems;
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

    private void Awake()
    {
        // UnityEngine.Object fields are compared with `== null` (Unity's own null check), never `?.`.
        if (promptField == null || psiSlider == null || preview == null || status == null) BuildUi();
    }

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
        if (promptField != null) promptField.onValueChanged.AddListener(OnChanged);
        if (psiSlider != null) psiSlider.onValueChanged.AddListener(OnChanged);
    }

    private void OnDisable()
    {
        if (promptField != null) promptField.onValueChanged.RemoveListener(OnChanged);
        if (psiSlider != null) psiSlider.onValueChanged.RemoveListener(OnChanged);
        _session?.Dispose();   // cancels the stream: the server stops working for us
        _session = null;
        _client?.Dispose();
        _client = null;
        if (_shown != null) AvatarGenerator.Release(_shown);
        _shown = null;
    }

    private void OnChanged(string _) => Send();

    private void OnChanged(float _) => Send();

    private void Send()
    {
        string text = promptField != null ? promptField.text : "";
        if (_session == null || string.IsNullOrWhiteSpace(text)) return;
        // A fixed seed keeps the same "character" while the prompt changes. Seeds are uint64:
        // in proto JSON (the HTTP bridge and its WebSocket) they are strings, "seed": "7".
        _session.Update(AvatarClient.CreateRequest(text, count: 1, seed: 7, psi: psiSlider != null ? psiSlider.value : 0.7f));
    }

    private void SetStatus(string text)
    {
        if (status != null) status.text = text;
    }

    private void BuildUi()
    {
        var resources = new DefaultControls.Resources();
        var canvasObject = new GameObject("Live Creator UI", typeof(Canvas), typeof(CanvasScaler), typeof(GraphicRaycaster));
        canvasObject.GetComponent<Canvas>().renderMode = RenderMode.ScreenSpaceOverlay;
        Transform root = canvasObject.transform;
        if (FindObjectOfType<EventSystem>() == null)
            new GameObject("EventSystem", typeof(EventSystem), typeof(StandaloneInputModule));

        GameObject field = DefaultControls.CreateInputField(resources);
        Place(field, root, new Vector2(0, 160), new Vector2(480, 40));
        promptField = field.GetComponent<InputField>();
        promptField.placeholder.GetComponent<Text>().text = "type a prompt: pink hair, twin tails";

        GameObject slider = DefaultControls.CreateSlider(resources);
        Place(slider, root, new Vector2(0, 110), new Vector2(480, 20));
        psiSlider = slider.GetComponent<Slider>();
        psiSlider.minValue = 0f;
        psiSlider.maxValue = 2f;
        psiSlider.value = 0.7f;

        GameObject image = DefaultControls.CreateRawImage(resources);
        Place(image, root, new Vector2(0, -60), new Vector2(256, 256));
        preview = image.GetComponent<RawImage>();

        GameObject label = DefaultControls.CreateText(resources);
        Place(label, root, new Vector2(0, -220), new Vector2(480, 30));
        status = label.GetComponent<Text>();
        status.alignment = TextAnchor.MiddleCenter;
        status.text = "type a prompt";
    }

    private static void Place(GameObject control, Transform parent, Vector2 position, Vector2 size)
    {
        control.transform.SetParent(parent, false);
        var rect = (RectTransform)control.transform;
        rect.anchoredPosition = position;
        rect.sizeDelta = size;
    }
}
