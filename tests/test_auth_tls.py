"""Security against a real server: bearer tokens (constant-time, health and reflection
open), TLS and mutual TLS with certificates made here, the limits (message size,
streams per connection, in-flight calls per client, prompt bytes), model names that try
to leave the model repository, and logs that never contain a token."""

from __future__ import annotations

import concurrent.futures
import json
import queue
import shutil
import ssl
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_util import running_server, subprocess_server
from tls_util import make_certs

from moe_avatar.bundle import BundleError, load_bundle
from moe_avatar.server import auth, tls
from moe_avatar.server.config import ConfigError, ServerConfig
from moe_avatar_client import cli
from moe_avatar_client.client import AvatarClient
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

GOOD, OTHER, WRONG = "tok-good-8f3a9c", "tok-other-51d2e7", "tok-wrong-0b6e44"
HEALTH = health_pb2.HealthCheckResponse


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "tokens.txt"
    path.write_text(f"# game backend\n{GOOD}\n\n   {OTHER}  \n# retired: {WRONG} is not a token\n")
    return path


# --- TokenAuth as a pure function ----------------------------------------------------

def test_tokens_file_skips_comments_and_blank_lines(tokens_file):
    assert auth.read_tokens_file(tokens_file) == [GOOD, OTHER]


def test_token_check(tokens_file):
    check = auth.TokenAuth([GOOD, OTHER]).check
    assert check(f"Bearer {GOOD}") and check(f"bearer {OTHER}") and check(f"  Bearer   {GOOD} ")
    for bad in (None, "", GOOD, f"Bearer {WRONG}", f"Basic {GOOD}", f"Bearer {GOOD}x", f"Bearer {GOOD[:-1]}",
                "Bearer ", f"Bearer {GOOD} {GOOD}", "Bearer " + "x" * 10_000, "Bearer \udcff"):
        assert not check(bad), bad
    assert GOOD not in repr(auth.TokenAuth([GOOD]))


def test_authorizer_reads_file_and_environment(tokens_file):
    config = ServerConfig(auth_tokens_file=str(tokens_file))
    authorize = auth.authorizer(config, environ={auth.TOKENS_ENV: " env-a , env-b,"})
    assert all(authorize(f"Bearer {t}") for t in (GOOD, OTHER, "env-a", "env-b"))
    assert not authorize(f"Bearer {WRONG}")
    assert auth.authorizer(ServerConfig(), environ={})(None)  # no tokens: auth is off
    assert not auth.authorizer(ServerConfig(), environ={auth.TOKENS_ENV: "x"})(None)


def test_unusable_token_file_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(auth.AuthConfigError, match="holds no tokens"):
        auth.token_auth(ServerConfig(auth_tokens_file=str(empty)), environ={})
    with pytest.raises(ConfigError, match="--auth-tokens-file"):
        ServerConfig(models=tmp_path, auth_tokens_file=str(tmp_path / "missing.txt")).validate()


# --- auth on the gRPC port -----------------------------------------------------------

@pytest.fixture(scope="module")
def auth_server(model_repo, tokens_file):
    with running_server(model_repo, auth_tokens_file=str(tokens_file)) as s:
        yield s


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert auth.MESSAGE in info.value.details() or info.value.code() != grpc.StatusCode.UNAUTHENTICATED
    return info.value.code()


def test_rpcs_need_a_valid_token(auth_server):
    channel = grpc.insecure_channel(auth_server.target)
    stub = pb_grpc.AvatarServiceStub(channel)
    request = pb.GenerateRequest(prompt="cat ears", seed=1)
    for metadata in ((), (("authorization", f"Bearer {WRONG}"),), (("authorization", GOOD),)):
        calls = [lambda: list(stub.Generate(request, timeout=10, metadata=metadata)),
                 lambda: stub.ListModels(pb.ListModelsRequest(), timeout=10, metadata=metadata),
                 lambda: stub.EncodeText(pb.EncodeTextRequest(prompt="a"), timeout=10, metadata=metadata),
                 lambda: list(stub.Edit(iter([pb.EditRequest(sequence=1, request=request)]), timeout=10,
                                        metadata=metadata))]
        for call in calls:
            assert _code(call) == grpc.StatusCode.UNAUTHENTICATED
    assert auth_server.metrics.requests.labels("Generate", "UNAUTHENTICATED")._value.get() >= 3
    for token in (GOOD, OTHER):
        with AvatarClient(auth_server.target, token=token) as client:
            assert len(client.generate("cat ears", seed=1, count=2).textures) == 2
            assert client.list_models().default_model == "tiny"


def test_health_and_reflection_need_no_token(auth_server):
    channel = grpc.insecure_channel(auth_server.target)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == HEALTH.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=5))
    assert "moeavatar.v1.AvatarService" in {s.name for s in answer.list_services_response.service}


def test_environment_tokens(model_repo, monkeypatch):
    monkeypatch.setenv(auth.TOKENS_ENV, "env-token-1,env-token-2")
    with running_server(model_repo) as s:
        with AvatarClient(s.target, token="env-token-2", retries=0) as client:
            assert client.list_models().models
        with AvatarClient(s.target, token="env-token-3", retries=0) as client:
            assert _code(client.list_models) == grpc.StatusCode.UNAUTHENTICATED


def test_logs_never_contain_tokens(model_repo, tokens_file, monkeypatch):
    monkeypatch.setenv(auth.TOKENS_ENV, "env-secret-77aa")
    with subprocess_server(model_repo, "--auth-tokens-file", str(tokens_file), "--log-level", "DEBUG",
                           timeout=300) as s:
        for token in (WRONG, "env-secret-77aa", GOOD, f"{GOOD}-almost"):
            with AvatarClient(s.target, token=token, retries=0) as client:
                try:
                    client.generate("log test", seed=1)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAUTHENTICATED
        s.process.terminate()
        assert s.process.wait(20) == 0
    log = "".join(s.log_lines)
    assert '"refused /moeavatar.v1.AvatarService/Generate' in log  # the refusals were logged ...
    assert '"Generate OK"' in log
    for token in (GOOD, OTHER, WRONG, "env-secret-77aa", "tok-"):  # ... without any token
        assert token not in log
    serving = next(json.loads(line) for line in s.log_lines if '"serving on port' in line)
    assert serving["auth"] == "bearer (3 tokens)" and serving["tls"] == "off"


# --- TLS and mutual TLS ----------------------------------------------------------------

def test_tls_config_is_checked(certs, tmp_path):
    with pytest.raises(ConfigError, match="--tls-key"):
        ServerConfig(models=tmp_path, tls_cert=certs.server_cert).validate()
    with pytest.raises(ConfigError, match="--tls-client-ca"):
        ServerConfig(models=tmp_path, tls_client_ca=certs.ca).validate()
    with pytest.raises(ConfigError, match="--tls-cert"):
        ServerConfig(models=tmp_path, tls_cert=str(tmp_path / "nope.pem"), tls_key=certs.server_key).validate()
    mismatched = ServerConfig(models=tmp_path, tls_cert=certs.server_cert, tls_key=certs.client_key).validate()
    with pytest.raises(tls.TLSConfigError, match="--tls-cert .* / --tls-key .*not a matching"):
        tls.server_credentials(mismatched)
    assert tls.ssl_context(ServerConfig()) is None and tls.server_credentials(ServerConfig()) is None


@pytest.fixture(scope="module")
def tls_server(model_repo, certs):
    with running_server(model_repo, tls_cert=certs.server_cert, tls_key=certs.server_key) as s:
        yield s


def test_tls(tls_server, certs):
    with AvatarClient(tls_server.target, tls_ca=certs.ca) as client:
        assert len(client.generate("tls please", seed=2, count=2).textures) == 2
    with AvatarClient(tls_server.target, retries=0, timeout=5) as plaintext:
        assert _code(plaintext.list_models) == grpc.StatusCode.UNAVAILABLE
    with AvatarClient(tls_server.target, tls_ca=certs.rogue_cert, retries=0, timeout=5) as untrusting:
        assert _code(untrusting.list_models) == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def mtls_server(model_repo, certs):
    """Mutual TLS plus a token from the environment (read once, at start)."""
    server = running_server(model_repo, tls_cert=certs.server_cert, tls_key=certs.server_key,
                            tls_client_ca=certs.ca)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(auth.TOKENS_ENV, GOOD)
        started = server.__enter__()
    try:
        yield started
    finally:
        server.__exit__(None, None, None)


def test_mutual_tls_with_token(mtls_server, certs, capsys):
    with AvatarClient(mtls_server.target, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key,
                      token=GOOD) as client:
        assert client.generate("mtls please", seed=3).textures
    common = ["--target", mtls_server.target, "--tls-ca", certs.ca, "--timeout", "10"]
    assert cli.main([*common, "--tls-cert", certs.client_cert, "--tls-key", certs.client_key, "health"]) == 0
    assert cli.main([*common, "--tls-cert", certs.client_cert, "--tls-key", certs.client_key, "--token", GOOD,
                     "info"]) == 0
    assert "tiny 0.0.1" in capsys.readouterr().out
    with AvatarClient(mtls_server.target, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key,
                      retries=0) as no_token:  # a certificate does not replace the token
        assert _code(no_token.list_models) == grpc.StatusCode.UNAUTHENTICATED
    for cert, key in ((None, None), (certs.rogue_cert, certs.rogue_key)):  # no / untrusted client cert
        with AvatarClient(mtls_server.target, tls_ca=certs.ca, tls_cert=cert, tls_key=key, token=GOOD,
                          retries=0, timeout=5) as refused:
            assert _code(refused.health) == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ValueError, match="together"):
        AvatarClient(mtls_server.target, tls_cert=certs.client_cert)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """A TLS handshake in memory (no sockets); raises ssl.SSLError when refused."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    ends = {"client": client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost"),
            "server": server_ctx.wrap_bio(s_in, s_out, server_side=True)}
    finished: set[str] = set()
    for _ in range(20):
        for name, end in ends.items():
            if name not in finished:
                try:
                    end.do_handshake()
                    finished.add(name)
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if len(finished) == 2:
            ends["client"].write(b"ping")  # TLS 1.3 reports a refused client certificate late
            s_in.write(c_out.read())
            assert ends["server"].read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


def test_ssl_context_for_the_http_bridge(certs, tmp_path):
    config = ServerConfig(models=tmp_path, tls_cert=certs.server_cert, tls_key=certs.server_key,
                          tls_client_ca=certs.ca).validate()
    server_ctx = tls.ssl_context(config)
    assert server_ctx.verify_mode == ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=certs.ca)
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, client_ctx)  # no client certificate
    client_ctx.load_cert_chain(certs.client_cert, certs.client_key)
    _handshake(server_ctx, client_ctx)


# --- limits --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited_server(model_repo):
    with running_server(model_repo, max_inflight_per_client=2, max_streams_per_connection=1) as s:
        yield s


def _in_flight(server) -> int:
    async def read() -> int:
        return server.server.guard.in_flight
    return server.call(read())


def _wait_in_flight(server, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _in_flight(server) != n:
        assert time.monotonic() < deadline, f"in-flight calls stayed {_in_flight(server)}, expected {n}"
        time.sleep(0.02)


class OpenEdit:
    """An Edit session that stays open (in flight) until close()."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue = queue.Queue()
        self.call = pb_grpc.AvatarServiceStub(channel).Edit(iter(self._requests.get, None), timeout=60)

    def close(self) -> None:
        self._requests.put(None)
        list(self.call)


def _own_connection(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def test_in_flight_calls_per_client(limited_server):
    channels = [_own_connection(limited_server.target) for _ in range(3)]
    edits = [OpenEdit(channels[0]), OpenEdit(channels[1])]
    _wait_in_flight(limited_server, 2)
    stub = pb_grpc.AvatarServiceStub(channels[2])
    with pytest.raises(grpc.RpcError) as info:
        stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit 2 (--max-inflight-per-client)" in info.value.details()
    health = health_pb2_grpc.HealthStub(channels[2]).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == HEALTH.SERVING  # probes are not counted
    edits.pop().close()
    _wait_in_flight(limited_server, 1)
    assert stub.ListModels(pb.ListModelsRequest(), timeout=10).models
    edits.pop().close()
    _wait_in_flight(limited_server, 0)


def test_streams_per_connection(limited_server):
    channel = _own_connection(limited_server.target)
    edit = OpenEdit(channel)
    _wait_in_flight(limited_server, 1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second = pool.submit(pb_grpc.AvatarServiceStub(channel).ListModels, pb.ListModelsRequest(), timeout=30)
        time.sleep(0.5)
        # The second stream waits for the first to end (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS = 1).
        assert not second.done() and _in_flight(limited_server) == 1
        edit.close()
        assert second.result(30).models
    _wait_in_flight(limited_server, 0)


def test_message_size_and_prompt_bytes(limited_server):
    stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(limited_server.target))
    with pytest.raises(grpc.RpcError) as info:  # > 64 KiB: refused before it is parsed
        list(stub.Generate(pb.GenerateRequest(prompt="x" * 70_000), timeout=10))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(pb.GenerateRequest(prompt="😺" * 1000), timeout=10))  # 1000 chars, 4000 bytes
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt: must be at most 3000 bytes of UTF-8 (got 4000)" in info.value.details()
    assert list(stub.Generate(pb.GenerateRequest(prompt="猫" * 1000, seed=1), timeout=30))[-1].HasField("done")


@pytest.mark.parametrize("name", ["..", "../tiny", "tiny/..", "./tiny", "tiny/../tiny", "..\\tiny", "%2e%2e/tiny",
                                  "tiny\x00", "models/tiny", "/tmp", "~"])
def test_model_names_never_address_files(limited_server, name):
    stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(limited_server.target))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelInfo(pb.GetModelInfoRequest(model=name), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "is not loaded (loaded: tiny 0.0.1)" in \
        info.value.details()


def test_bundle_files_cannot_point_outside_the_bundle(model_repo, tmp_path):
    bundle = tmp_path / "evil"
    shutil.copytree(model_repo / "tiny", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["tokenizer"]["path"] = "../../../etc/passwd"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="files.tokenizer.path '../../../etc/passwd' points outside the bundle"):
        load_bundle(bundle)
