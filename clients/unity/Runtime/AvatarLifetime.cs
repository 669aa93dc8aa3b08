// A CancellationToken that is cancelled when a MonoBehaviour's GameObject is destroyed, on every
// Unity version the package supports: MonoBehaviour.destroyCancellationToken exists only from
// Unity 2022.2 on; before that a small relay component cancels its token in OnDestroy.
using System.Threading;
using UnityEngine;

namespace MoeAvatar.Client
{
    public static class AvatarLifetime
    {
        /// <summary>Pass it to GenerateAsync and friends: the request is cancelled when the object goes away.</summary>
        public static CancellationToken DestroyToken(this MonoBehaviour behaviour)
        {
#if UNITY_2022_2_OR_NEWER
            return behaviour.destroyCancellationToken;
#else
            // Unity's `== null` (not `??`): a destroyed component compares equal to null.
            DestroyRelay relay = behaviour.GetComponent<DestroyRelay>();
            if (relay == null) relay = behaviour.gameObject.AddComponent<DestroyRelay>();
            return relay.Token;
#endif
        }
    }

#if !UNITY_2022_2_OR_NEWER
    /// <summary>Cancels its token when its GameObject is destroyed (Unity before 2022.2).</summary>
    [AddComponentMenu("")]
    public sealed class DestroyRelay : MonoBehaviour
    {
        private readonly CancellationTokenSource _source = new CancellationTokenSource();

        public CancellationToken Token => _source.Token;

        private void OnDestroy()
        {
            _source.Cancel();
            _source.Dispose();
        }
    }
#endif
}
