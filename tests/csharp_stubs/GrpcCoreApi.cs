// Compile-only stand-in for the Grpc.Core.Api types that grpc_csharp_plugin's client stubs use
// (Method, Marshaller, CallInvoker, ClientBase<T>, the call types); signatures as in
// Grpc.Core.Api 2.x, no behaviour. See GoogleProtobuf.cs.
using System;
using System.Buffers;
using System.Threading;

namespace Grpc.Core
{
    public enum MethodType { Unary, ClientStreaming, ServerStreaming, DuplexStreaming }
    public abstract class SerializationContext
    {
        public virtual void Complete(byte[] payload) => throw null;
        public virtual void SetPayloadLength(int payloadLength) => throw null;
        public virtual IBufferWriter<byte> GetBufferWriter() => throw null;
        public virtual void Complete() => throw null;
    }
    public abstract class DeserializationContext
    {
        public virtual byte[] PayloadAsNewBuffer() => throw null;
        public virtual ReadOnlySequence<byte> PayloadAsReadOnlySequence() => throw null;
    }
    public class Marshaller<T> { }
    public static class Marshallers
    {
        public static Marshaller<T> Create<T>(Action<T, SerializationContext> contextualSerializer,
            Func<DeserializationContext, T> contextualDeserializer) => throw null;
    }
    public interface IMethod { }
    public class Method<TRequest, TResponse> : IMethod
    {
        public Method(MethodType type, string serviceName, string name, Marshaller<TRequest> requestMarshaller,
            Marshaller<TResponse> responseMarshaller) { }
    }
    public sealed class Metadata { }
    public struct CallOptions
    {
        public CallOptions(Metadata headers = null, DateTime? deadline = null, CancellationToken cancellationToken = default(CancellationToken)) { }
    }
    public sealed class AsyncUnaryCall<TResponse> { }
    public sealed class AsyncServerStreamingCall<TResponse> { }
    public sealed class AsyncClientStreamingCall<TRequest, TResponse> { }
    public sealed class AsyncDuplexStreamingCall<TRequest, TResponse> { }
    public abstract class ChannelBase { }
    public abstract class CallInvoker
    {
        public abstract TResponse BlockingUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request) where TRequest : class where TResponse : class;
        public abstract AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request) where TRequest : class where TResponse : class;
        public abstract AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request) where TRequest : class where TResponse : class;
        public abstract AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options) where TRequest : class where TResponse : class;
        public abstract AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options) where TRequest : class where TResponse : class;
    }
    public abstract class ClientBase
    {
        protected ClientBase() { }
        protected ClientBase(ChannelBase channel) { }
        protected ClientBase(CallInvoker callInvoker) { }
        protected ClientBase(ClientBaseConfiguration configuration) { }
        protected CallInvoker CallInvoker => throw null;
        protected internal class ClientBaseConfiguration { }
    }
    public abstract class ClientBase<T> : ClientBase where T : ClientBase<T>
    {
        protected ClientBase() { }
        protected ClientBase(ChannelBase channel) : base(channel) { }
        protected ClientBase(CallInvoker callInvoker) : base(callInvoker) { }
        protected ClientBase(ClientBaseConfiguration configuration) : base(configuration) { }
        protected abstract T NewInstance(ClientBaseConfiguration configuration);
    }
}
