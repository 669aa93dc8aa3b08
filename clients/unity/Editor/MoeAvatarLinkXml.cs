#nullable enable
// Unity only reads link.xml from Assets/; this hands the package's own link.xml to the
// linker so IL2CPP builds keep the gRPC/Protobuf types used through reflection.
using System.IO;
using UnityEditor;
using UnityEditor.Build;
using UnityEditor.Build.Reporting;
using UnityEditor.UnityLinker;

namespace MoeAvatar.Client.Editor
{
    internal sealed class MoeAvatarLinkXml : IUnityLinkerProcessor
    {
        public int callbackOrder => 0;

        public string GenerateAdditionalLinkXmlFile(BuildReport report, UnityLinkerBuildPipelineData data)
        {
            // Resolves wherever the package lives (Packages/, a git URL, a local path).
            var info = UnityEditor.PackageManager.PackageInfo.FindForAssembly(typeof(MoeAvatarLinkXml).Assembly);
            string root = info != null ? info.resolvedPath : Path.GetFullPath("Packages/com.moeavatar.client");
            return Path.Combine(root, "link.xml");
        }

        // Required by the interface in Unity 2021.3, gone in later versions; harmless there.
        public void OnBeforeRun(BuildReport report, UnityLinkerBuildPipelineData data) { }
        public void OnAfterRun(BuildReport report, UnityLinkerBuildPipelineData data) { }
    }
}
