// Compile-only stand-in for the few UnityEngine members Runtime/AvatarLifetime.cs uses.
// MonoBehaviour.destroyCancellationToken exists only when compiled with UNITY_2022_2_OR_NEWER,
// as in Unity itself, so the pre-2022.2 branch is proven not to need it.
using System;
using System.Threading;

namespace UnityEngine
{
    public class Object
    {
        public static bool operator ==(Object a, Object b) => throw null;
        public static bool operator !=(Object a, Object b) => throw null;
        public override bool Equals(object other) => throw null;
        public override int GetHashCode() => throw null;
    }
    public class GameObject : Object
    {
        public T AddComponent<T>() where T : Component => throw null;
    }
    public class Component : Object
    {
        public GameObject gameObject => throw null;
        public T GetComponent<T>() => throw null;
    }
    public class Behaviour : Component { }
    public class MonoBehaviour : Behaviour
    {
#if UNITY_2022_2_OR_NEWER
        public CancellationToken destroyCancellationToken => throw null;
#endif
    }
    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName) { }
    }
}
