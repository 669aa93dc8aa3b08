// Compile-only stand-in for the Google.Protobuf API surface that protoc's C# output and
// grpc_csharp_plugin's output call (signatures as in Google.Protobuf 3.21+; no behaviour).
// tests/test_unity_package.py compiles clients/unity/Runtime/Generated/*.cs against it with
// Mono's mcs, where the real NuGet package cannot be installed.
using System;
using System.Buffers;
using System.Collections;
using System.Collections.Generic;

namespace Google.Protobuf
{
    public interface IMessage
    {
        void MergeFrom(CodedInputStream input);
        void WriteTo(CodedOutputStream output);
        int CalculateSize();
        Reflection.MessageDescriptor Descriptor { get; }
    }
    public interface IMessage<T> : IMessage, IEquatable<T>, IDeepCloneable<T> where T : IMessage<T>
    {
        void MergeFrom(T message);
    }
    public interface IDeepCloneable<T> { T Clone(); }
    public interface IBufferMessage : IMessage
    {
        void InternalMergeFrom(ref ParseContext ctx);
        void InternalWriteTo(ref WriteContext ctx);
    }
    public class MessageParser<T> : MessageParser where T : IMessage<T>
    {
        public MessageParser(Func<T> factory) { }
        public T ParseFrom(byte[] data) => throw null;
        public T ParseFrom(ReadOnlySequence<byte> data) => throw null;
    }
    public static class MessageExtensions
    {
        public static byte[] ToByteArray(this IMessage message) => throw null;
        public static void WriteTo(this IMessage message, IBufferWriter<byte> output) => throw null;
    }
    public sealed class ByteString : IEquatable<ByteString>
    {
        public static ByteString Empty => throw null;
        public int Length => throw null;
        public byte[] ToByteArray() => throw null;
        public bool Equals(ByteString other) => throw null;
        public static bool operator ==(ByteString a, ByteString b) => throw null;
        public static bool operator !=(ByteString a, ByteString b) => throw null;
        public override bool Equals(object obj) => throw null;
        public override int GetHashCode() => throw null;
    }
    public static class ProtoPreconditions
    {
        public static T CheckNotNull<T>(T value, string name) where T : class => throw null;
    }
    public sealed class UnknownFieldSet
    {
        public int CalculateSize() => throw null;
        public void WriteTo(CodedOutputStream output) => throw null;
        public void WriteTo(ref WriteContext ctx) => throw null;
        public static UnknownFieldSet Clone(UnknownFieldSet other) => throw null;
        public static UnknownFieldSet MergeFrom(UnknownFieldSet set, UnknownFieldSet other) => throw null;
        public static UnknownFieldSet MergeFieldFrom(UnknownFieldSet set, CodedInputStream input) => throw null;
        public static UnknownFieldSet MergeFieldFrom(UnknownFieldSet set, ref ParseContext ctx) => throw null;
    }
    public static class JsonFormatter
    {
        public static string ToDiagnosticString(IMessage message) => throw null;
    }
    public sealed class FieldCodec<T> { }
    public static class FieldCodec
    {
        public static FieldCodec<string> ForString(uint tag) => throw null;
        public static FieldCodec<string> ForString(uint tag, string defaultValue) => throw null;
        public static FieldCodec<float> ForFloat(uint tag) => throw null;
        public static FieldCodec<T> ForMessage<T>(uint tag, MessageParser<T> parser) where T : class, IMessage<T> => throw null;
    }
    public sealed class CodedInputStream
    {
        public uint ReadTag() => throw null;
        public string ReadString() => throw null;
        public ByteString ReadBytes() => throw null;
        public bool ReadBool() => throw null;
        public float ReadFloat() => throw null;
        public int ReadEnum() => throw null;
        public int ReadInt32() => throw null;
        public uint ReadUInt32() => throw null;
        public ulong ReadUInt64() => throw null;
        public void ReadMessage(IMessage builder) => throw null;
        public void ReadRawMessage(IMessage message) => throw null;
    }
    public struct ParseContext
    {
        public uint ReadTag() => throw null;
        public string ReadString() => throw null;
        public ByteString ReadBytes() => throw null;
        public bool ReadBool() => throw null;
        public float ReadFloat() => throw null;
        public int ReadEnum() => throw null;
        public int ReadInt32() => throw null;
        public uint ReadUInt32() => throw null;
        public ulong ReadUInt64() => throw null;
        public void ReadMessage(IMessage message) => throw null;
    }
    public sealed class CodedOutputStream
    {
        public void WriteRawTag(byte b1) => throw null;
        public void WriteRawTag(byte b1, byte b2) => throw null;
        public void WriteString(string value) => throw null;
        public void WriteBytes(ByteString value) => throw null;
        public void WriteBool(bool value) => throw null;
        public void WriteFloat(float value) => throw null;
        public void WriteEnum(int value) => throw null;
        public void WriteInt32(int value) => throw null;
        public void WriteUInt32(uint value) => throw null;
        public void WriteUInt64(ulong value) => throw null;
        public void WriteMessage(IMessage value) => throw null;
        public void WriteRawMessage(IMessage value) => throw null;
        public static int ComputeStringSize(string value) => throw null;
        public static int ComputeBytesSize(ByteString value) => throw null;
        public static int ComputeEnumSize(int value) => throw null;
        public static int ComputeInt32Size(int value) => throw null;
        public static int ComputeUInt32Size(uint value) => throw null;
        public static int ComputeUInt64Size(ulong value) => throw null;
        public static int ComputeMessageSize(IMessage value) => throw null;
    }
    public struct WriteContext
    {
        public void WriteRawTag(byte b1) => throw null;
        public void WriteRawTag(byte b1, byte b2) => throw null;
        public void WriteString(string value) => throw null;
        public void WriteBytes(ByteString value) => throw null;
        public void WriteBool(bool value) => throw null;
        public void WriteFloat(float value) => throw null;
        public void WriteEnum(int value) => throw null;
        public void WriteInt32(int value) => throw null;
        public void WriteUInt32(uint value) => throw null;
        public void WriteUInt64(ulong value) => throw null;
        public void WriteMessage(IMessage value) => throw null;
    }
}

namespace Google.Protobuf.Collections
{
    public sealed class RepeatedField<T> : IList<T>, IEquatable<RepeatedField<T>>
    {
        public void AddEntriesFrom(CodedInputStream input, FieldCodec<T> codec) => throw null;
        public void AddEntriesFrom(ref ParseContext ctx, FieldCodec<T> codec) => throw null;
        public int CalculateSize(FieldCodec<T> codec) => throw null;
        public void WriteTo(CodedOutputStream output, FieldCodec<T> codec) => throw null;
        public void WriteTo(ref WriteContext ctx, FieldCodec<T> codec) => throw null;
        public RepeatedField<T> Clone() => throw null;
        public void Add(IEnumerable<T> values) => throw null;
        public bool Equals(RepeatedField<T> other) => throw null;
        public T this[int index] { get => throw null; set => throw null; }
        public int Count => throw null;
        public bool IsReadOnly => throw null;
        public void Add(T item) => throw null;
        public void Clear() => throw null;
        public bool Contains(T item) => throw null;
        public void CopyTo(T[] array, int arrayIndex) => throw null;
        public IEnumerator<T> GetEnumerator() => throw null;
        IEnumerator IEnumerable.GetEnumerator() => throw null;
        public int IndexOf(T item) => throw null;
        public void Insert(int index, T item) => throw null;
        public bool Remove(T item) => throw null;
        public void RemoveAt(int index) => throw null;
    }
    public sealed class MapField<TKey, TValue> : IDictionary<TKey, TValue>, IEquatable<MapField<TKey, TValue>>
    {
        public sealed class Codec
        {
            public Codec(FieldCodec<TKey> keyCodec, FieldCodec<TValue> valueCodec, uint mapTag) { }
        }
        public void AddEntriesFrom(CodedInputStream input, Codec codec) => throw null;
        public void AddEntriesFrom(ref ParseContext ctx, Codec codec) => throw null;
        public int CalculateSize(Codec codec) => throw null;
        public void WriteTo(CodedOutputStream output, Codec codec) => throw null;
        public void WriteTo(ref WriteContext ctx, Codec codec) => throw null;
        public MapField<TKey, TValue> Clone() => throw null;
        public void Add(IDictionary<TKey, TValue> entries) => throw null;
        public bool Equals(MapField<TKey, TValue> other) => throw null;
        public TValue this[TKey key] { get => throw null; set => throw null; }
        public ICollection<TKey> Keys => throw null;
        public ICollection<TValue> Values => throw null;
        public int Count => throw null;
        public bool IsReadOnly => throw null;
        public void Add(TKey key, TValue value) => throw null;
        public void Add(KeyValuePair<TKey, TValue> item) => throw null;
        public void Clear() => throw null;
        public bool Contains(KeyValuePair<TKey, TValue> item) => throw null;
        public bool ContainsKey(TKey key) => throw null;
        public void CopyTo(KeyValuePair<TKey, TValue>[] array, int arrayIndex) => throw null;
        public IEnumerator<KeyValuePair<TKey, TValue>> GetEnumerator() => throw null;
        IEnumerator IEnumerable.GetEnumerator() => throw null;
        public bool Remove(TKey key) => throw null;
        public bool Remove(KeyValuePair<TKey, TValue> item) => throw null;
        public bool TryGetValue(TKey key, out TValue value) => throw null;
    }
    public static class ProtobufEqualityComparers
    {
        public static EqualityComparer<float> BitwiseSingleEqualityComparer => throw null;
        public static EqualityComparer<double> BitwiseDoubleEqualityComparer => throw null;
    }
}

namespace Google.Protobuf.Reflection
{
    public sealed class MessageDescriptor
    {
        public IList<MessageDescriptor> NestedTypes => throw null;
    }
    public sealed class ServiceDescriptor { }
    public sealed class FileDescriptor
    {
        public IList<MessageDescriptor> MessageTypes => throw null;
        public IList<ServiceDescriptor> Services => throw null;
        public static FileDescriptor FromGeneratedCode(byte[] descriptorData, FileDescriptor[] dependencies,
            GeneratedClrTypeInfo generatedCodeInfo) => throw null;
    }
    public sealed class GeneratedClrTypeInfo
    {
        public GeneratedClrTypeInfo(Type[] nestedEnums, Type[] nestedExtensions, GeneratedClrTypeInfo[] nestedTypes) { }
        public GeneratedClrTypeInfo(Type clrType, MessageParser parser, string[] propertyNames, string[] oneofNames,
            Type[] nestedEnums, Type[] nestedExtensions, GeneratedClrTypeInfo[] nestedTypes) { }
    }
    [AttributeUsage(AttributeTargets.Field)]
    public sealed class OriginalNameAttribute : Attribute
    {
        public OriginalNameAttribute(string name) { }
        public bool PreferredAlias { get; set; }
    }
}

namespace Google.Protobuf
{
    public abstract class MessageParser { }
}
