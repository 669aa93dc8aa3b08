#nullable enable
// Window > Moe Avatar > Generator: type a prompt, browse a grid of results, tick the good
// ones and save them as PNG assets. Each PNG gets a sidecar .json whose "request" is the
// exact GenerateRequest (proto JSON mapping), so the texture can be regenerated bit-exactly
// (same server build + model version) or POSTed to the HTTP bridge as is.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Threading;
using Cysharp.Net.Http;
using UnityEditor;
using UnityEngine;
using Proto = MoeAvatar.V1;

namespace MoeAvatar.Client.Editor
{
    public sealed class AvatarGeneratorWindow : EditorWindow
    {
        private const string PrefsPrefix = "MoeAvatar.";

        [Serializable]
        private sealed class SidecarOutput
        {
            public string format = "TEXTURE_FORMAT_PNG";
            public int size;
        }

        // Field names = proto JSON names of GenerateRequest; seed is a string as in the proto JSON mapping (uint64).
        [Serializable]
        private sealed class SidecarRequest
        {
            public string prompt = "";
            public int count = 1;
            public string seed = "";
            public float psi;
            public SidecarOutput output = new SidecarOutput();
            public string model = "";
            public string modelVersion = "";
        }

        [Serializable]
        private sealed class Sidecar
        {
            public SidecarRequest request = new SidecarRequest();
            public float clipScore;
            public string requestId = "";
            public string createdAt = "";
        }

        private sealed class Entry
        {
            public Entry(AvatarTexture avatar, Texture2D preview, Proto.GenerateRequest request)
            {
                Avatar = avatar;
                Preview = preview;
                Request = request;
            }
            public AvatarTexture Avatar { get; }
            /// <summary>The request that made this texture (not the window's fields, which may have changed since).</summary>
            public Proto.GenerateRequest Request { get; }
            public Texture2D Preview { get; }
            public bool Selected { get; set; }
        }

        private string _server = "http://localhost:50051";
        private string _prompt = "pink hair, twin tails";
        private int _count = 8;
        private bool _fixedSeed;
        private long _seed = 1;
        private float _psi = 0.7f;
        private int _size;
        private string _model = "";        // empty = server default; set by "Load sidecar…" for exact regeneration
        private string _modelVersion = "";
        private string _folder = "Assets/MoeAvatars";
        private readonly List<Entry> _entries = new List<Entry>();
        private AvatarClient? _client;
        private string _clientServer = "";
        private CancellationTokenSource? _cts;
        private AvatarProgress _progress;
        private string _status = "";
        private Vector2 _scroll;

        [MenuItem("Window/Moe Avatar/Generator")]
        public static void Open() => GetWindow<AvatarGeneratorWindow>("Moe Avatar");

        private void OnEnable()
        {
            _server = EditorPrefs.GetString(PrefsPrefix + "Server", _server);
            _folder = EditorPrefs.GetString(PrefsPrefix + "Folder", _folder);
        }

        private void OnDisable()
        {
            _cts?.Cancel();
            _client?.Dispose();
            _client = null;
            ClearEntries();
        }

        private void OnGUI()
        {
            EditorGUI.BeginChangeCheck();
            _server = EditorGUILayout.TextField("Server", _server);
            if (EditorGUI.EndChangeCheck()) EditorPrefs.SetString(PrefsPrefix + "Server", _server);

            EditorGUILayout.LabelField("Prompt (English or 中文)");
            _prompt = EditorGUILayout.TextArea(_prompt, GUILayout.MinHeight(40));
            _count = EditorGUILayout.IntSlider("Count", _count, 1, 16);
            using (new EditorGUILayout.HorizontalScope())
            {
                _fixedSeed = EditorGUILayout.Toggle("Fixed seed", _fixedSeed);
                using (new EditorGUI.DisabledScope(!_fixedSeed))
                    _seed = Math.Max(0, EditorGUILayout.LongField(_seed));
            }
            _psi = EditorGUILayout.Slider(new GUIContent("Psi", "0 = the average avatar for the prompt, 1 = most varied"), _psi, 0f, 2f);
            _size = EditorGUILayout.IntField(new GUIContent("Size", "0 = native resolution, else 16..1024"), _size);
            _model = EditorGUILayout.TextField(new GUIContent("Model", "empty = the server's default"), _model);
            _modelVersion = EditorGUILayout.TextField(new GUIContent("Model version", "empty = newest loaded"), _modelVersion);

            using (new EditorGUILayout.HorizontalScope())
            {
                using (new EditorGUI.DisabledScope(_cts != null || string.IsNullOrWhiteSpace(_prompt)))
                    if (GUILayout.Button("Generate")) GenerateAsync();
                using (new EditorGUI.DisabledScope(_cts == null))
                    if (GUILayout.Button("Cancel")) _cts?.Cancel();
                if (GUILayout.Button("Load sidecar…")) LoadSidecar();
            }
            if (_cts != null)
                EditorGUI.ProgressBar(EditorGUILayout.GetControlRect(), _progress.Fraction, _progress.Stage.ToString());
            if (_status.Length > 0) EditorGUILayout.HelpBox(_status, MessageType.None);

            DrawGrid();

            EditorGUI.BeginChangeCheck();
            _folder = EditorGUILayout.TextField("Save into", _folder);
            if (EditorGUI.EndChangeCheck()) EditorPrefs.SetString(PrefsPrefix + "Folder", _folder);
            using (new EditorGUI.DisabledScope(!_entries.Exists(e => e.Selected)))
                if (GUILayout.Button("Save selected as PNG + .json")) SaveSelected();
        }

        private void DrawGrid()
        {
            const float cell = 128f;
            int columns = Mathf.Max(1, Mathf.FloorToInt((position.width - 20f) / (cell + 8f)));
            _scroll = EditorGUILayout.BeginScrollView(_scroll, GUILayout.ExpandHeight(true));
            for (int i = 0; i < _entries.Count; i += columns)
            {
                using (new EditorGUILayout.HorizontalScope())
                {
                    for (int j = i; j < Math.Min(i + columns, _entries.Count); j++)
                    {
                        Entry entry = _entries[j];
                        using (new EditorGUILayout.VerticalScope(GUILayout.Width(cell)))
                        {
                            Rect rect = GUILayoutUtility.GetRect(cell, cell);
                            EditorGUI.DrawTextureTransparent(rect, entry.Preview, ScaleMode.ScaleToFit);
                            string label = $"seed {entry.Avatar.Seed}  {entry.Avatar.ClipScore:F2}";
                            entry.Selected = EditorGUILayout.ToggleLeft(label, entry.Selected, GUILayout.Width(cell));
                        }
                    }
                }
            }
            EditorGUILayout.EndScrollView();
        }

        private Proto.GenerateRequest BuildRequest() => AvatarClient.CreateRequest(
            _prompt, _count, _fixedSeed ? (ulong)_seed : (ulong?)null, _psi,
            Proto.TextureFormat.Png, Proto.RowOrder.TopDown, (uint)Mathf.Max(0, _size),
            _model.Trim(), _modelVersion.Trim());

        // async void is fine for an editor button handler: every exception is caught here.
        private async void GenerateAsync()
        {
            if (_client == null || _clientServer != _server)
            {
                _client?.Dispose();
                _client = new AvatarClient(_server, new YetAnotherHttpHandler { Http2Only = true });
                _clientServer = _server;
            }
            var cts = new CancellationTokenSource();
            _cts = cts;
            _status = "";
            var progress = new Progress<AvatarProgress>(p => { _progress = p; Repaint(); });
            try
            {
                Proto.GenerateRequest request = BuildRequest();
                AvatarResult result = await _client.GenerateAsync(request, progress, cts.Token);
                ClearEntries();
                foreach (AvatarTexture avatar in result.Textures)
                    _entries.Add(new Entry(avatar, AvatarGenerator.ToTexture2D(avatar), request));
                _status = $"{result.Model} {result.ModelVersion}, base seed {result.Seed}, {result.ServerSeconds:F2}s on the server\n"
                          + $"Read: {result.Reading.Summary()}";
            }
            catch (OperationCanceledException)
            {
                _status = "Cancelled.";
            }
            catch (Exception e)
            {
                _status = e is Grpc.Core.RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : e.Message;
            }
            finally
            {
                _cts = null;
                cts.Dispose();
                Repaint();
            }
        }

        private void SaveSelected()
        {
            Directory.CreateDirectory(_folder);
            foreach (Entry entry in _entries)
            {
                if (!entry.Selected) continue;
                AvatarTexture avatar = entry.Avatar;
                Proto.GenerateRequest made = entry.Request;
                string name = $"{Slug(made.Prompt)}_{avatar.Seed}";
                string png = Path.Combine(_folder, name + ".png");
                // The server's PNG bytes as they are: re-encoding would lose the bit-exact match.
                File.WriteAllBytes(png, avatar.Data);
                var sidecar = new Sidecar
                {
                    request = new SidecarRequest
                    {
                        prompt = made.Prompt.Trim(),
                        count = 1,
                        seed = avatar.Seed?.ToString(CultureInfo.InvariantCulture) ?? "",
                        psi = avatar.Psi,
                        output = new SidecarOutput { format = "TEXTURE_FORMAT_PNG", size = (int)(made.Output?.Size ?? 0) },
                        model = avatar.Model,
                        modelVersion = avatar.ModelVersion,
                    },
                    clipScore = avatar.ClipScore,
                    requestId = avatar.RequestId,
                    createdAt = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture),
                };
                File.WriteAllText(Path.Combine(_folder, name + ".json"), JsonUtility.ToJson(sidecar, prettyPrint: true));
                AssetDatabase.ImportAsset(png);
                if (AssetImporter.GetAtPath(png) is TextureImporter importer)
                {
                    importer.textureType = TextureImporterType.Sprite;
                    importer.alphaIsTransparency = true;
                    importer.SaveAndReimport();
                }
            }
            AssetDatabase.Refresh();
            _status = $"Saved to {_folder}.";
        }

        private void LoadSidecar()
        {
            string path = EditorUtility.OpenFilePanel("Avatar sidecar", _folder, "json");
            if (string.IsNullOrEmpty(path)) return;
            Sidecar sidecar = JsonUtility.FromJson<Sidecar>(File.ReadAllText(path));
            _prompt = sidecar.request.prompt;
            _count = 1;
            _fixedSeed = long.TryParse(sidecar.request.seed, NumberStyles.None, CultureInfo.InvariantCulture, out _seed);
            _psi = sidecar.request.psi;
            _size = sidecar.request.output.size;
            _model = sidecar.request.model;
            _modelVersion = sidecar.request.modelVersion;
            _status = $"Loaded {Path.GetFileName(path)} (model {sidecar.request.model} {sidecar.request.modelVersion}). Press Generate.";
        }

        private void ClearEntries()
        {
            foreach (Entry entry in _entries) DestroyImmediate(entry.Preview);
            _entries.Clear();
        }

        private static string Slug(string text)
        {
            var chars = new List<char>();
            foreach (char c in text.Trim())
            {
                if (chars.Count >= 32) break;
                // Keep letters of any script (Chinese prompts give Chinese file names); the rest become '_'.
                chars.Add(char.IsLetterOrDigit(c) ? c : '_');
            }
            return chars.Count == 0 ? "avatar" : new string(chars.ToArray());
        }
    }
}
