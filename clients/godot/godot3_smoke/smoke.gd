extends SceneTree
## Godot 3 (3.2+) twin of the request logic in ../gdscript/addons/moe_avatar/moe_avatar_client.gd,
## written so it runs under Debian's headless `godot3-server` in the test suite
## (tests/test_godot_smoke.py). It POSTs a GenerateRequest (proto JSON) to the HTTP bridge,
## reads the JSON lines as they arrive, joins each texture's chunks, checks the SHA-256 from the
## header, decodes the PNG into an Image, prints one line per texture and a RESULT line, quits.
##
##     MOE_AVATAR_HTTP_PORT=8080 godot3-server --path clients/godot/godot3_smoke -s smoke.gd
##
## Environment: MOE_AVATAR_HTTP_HOST (127.0.0.1), MOE_AVATAR_HTTP_PORT (8080), MOE_AVATAR_PROMPT,
## MOE_AVATAR_COUNT (2), MOE_AVATAR_SEED (7), MOE_AVATAR_TOKEN (bearer token, if the server wants one).
## Exit code 0 when every texture arrived intact and decoded, 1 otherwise.

const TIMEOUT_MSEC = 60000


func _init():
	var host = _env("MOE_AVATAR_HTTP_HOST", "127.0.0.1")
	var port = int(_env("MOE_AVATAR_HTTP_PORT", "8080"))
	var body = {
		"prompt": _env("MOE_AVATAR_PROMPT", "pink hair, twin tails"),
		"count": int(_env("MOE_AVATAR_COUNT", "2")),
		"seed": _env("MOE_AVATAR_SEED", "7"),  # uint64: a string in proto JSON
		"output": {"format": "TEXTURE_FORMAT_PNG", "rowOrder": "ROW_ORDER_TOP_DOWN"},
	}
	var error = _generate(host, port, body)
	if error != "":
		print("RESULT error " + error)
		quit(1)
	else:
		quit(0)


func _env(name, default_value):
	# Godot 3 reads environment variables as Latin-1: take the bytes back and decode them as UTF-8.
	var value = OS.get_environment(name).to_ascii().get_string_from_utf8()
	return value if value != "" else default_value


## Returns "" on success, else a message; prints TEXTURE lines and the RESULT ok line.
func _generate(host, port, body):
	var deadline = OS.get_ticks_msec() + TIMEOUT_MSEC
	var http = HTTPClient.new()
	if http.connect_to_host(host, port) != OK:
		return "cannot connect to %s:%d" % [host, port]
	while http.get_status() in [HTTPClient.STATUS_RESOLVING, HTTPClient.STATUS_CONNECTING]:
		if not _tick(http, deadline):
			return "timed out connecting"
	if http.get_status() != HTTPClient.STATUS_CONNECTED:
		return "cannot connect to %s:%d (is the server running with --http-port %d?)" % [host, port, port]

	var headers = PoolStringArray(["Content-Type: application/json", "Accept: application/x-ndjson"])
	var token = _env("MOE_AVATAR_TOKEN", "")
	if token != "":
		headers.append("Authorization: Bearer " + token)
	if http.request(HTTPClient.METHOD_POST, "/v1/generate", headers, JSON.print(body)) != OK:
		return "request failed"
	while http.get_status() == HTTPClient.STATUS_REQUESTING:
		if not _tick(http, deadline):
			return "timed out sending"
	if not http.has_response():
		return "no response"
	var status_code = http.get_response_code()

	var state = {"textures": 0, "done": false, "header": null, "buffer": PoolByteArray()}
	var pending = PoolByteArray()
	var scanned = 0
	while http.get_status() == HTTPClient.STATUS_BODY:
		var chunk = http.read_response_body_chunk()
		if chunk.size() == 0:
			if not _tick(http, deadline):
				return "timed out reading"
			continue
		pending.append_array(chunk)
		if status_code != 200:
			continue
		# One JSON document per line; a line may span several reads.
		while scanned < pending.size():
			if pending[scanned] == 10:
				var line = pending.subarray(0, scanned).get_string_from_utf8().strip_edges() if scanned > 0 else ""
				pending = pending.subarray(scanned + 1, pending.size() - 1) if scanned + 1 < pending.size() else PoolByteArray()
				scanned = 0
				if line != "":
					var error = _handle_line(line, state)
					if error != "":
						return error
			else:
				scanned += 1
	if status_code != 200:
		return _http_error(status_code, pending.get_string_from_utf8())
	if pending.size() > 0:
		var error = _handle_line(pending.get_string_from_utf8().strip_edges(), state)
		if error != "":
			return error
	if not state["done"]:
		return "the stream ended before its done event"
	print("RESULT ok textures=%d" % state["textures"])
	return ""


func _tick(http, deadline):
	http.poll()
	OS.delay_msec(5)
	return OS.get_ticks_msec() < deadline


## The bridge's error body: {"code", "message", "details": [{"field", "description"}], "requestId"}.
func _http_error(status_code, text):
	var parsed = JSON.parse(text)
	if parsed.error != OK or typeof(parsed.result) != TYPE_DICTIONARY:
		return "http=%d body=%s" % [status_code, text.left(200)]
	var error = parsed.result
	var fields = []
	for detail in error.get("details", []):
		fields.append(str(detail.get("field", "")))
	return "http=%d code=%s fields=%s message=%s" % [status_code, error.get("code", ""),
		PoolStringArray(fields).join(","), error.get("message", "")]


func _handle_line(line, state):
	var parsed = JSON.parse(line)
	if parsed.error != OK or typeof(parsed.result) != TYPE_DICTIONARY:
		return "bad JSON line from the server: %s" % line.left(200)
	var event = parsed.result
	if event.has("error"):  # the stream failed after it started
		var error = event["error"]
		return "stream code=%s message=%s" % [error.get("code", ""), error.get("message", "")]
	if event.has("texture"):
		state["header"] = event["texture"]
		state["buffer"] = PoolByteArray()
	elif event.has("chunk"):
		return _add_chunk(event["chunk"], state)
	elif event.has("done"):
		var done = event["done"]
		if int(done.get("textureCount", 0)) != state["textures"]:
			return "done says %s textures, got %d" % [done.get("textureCount", 0), state["textures"]]
		state["done"] = true
	return ""


func _add_chunk(chunk, state):
	var header = state["header"]
	if header == null:
		return "chunk without a texture header"
	var index = int(header.get("index", 0))
	if int(chunk.get("textureIndex", 0)) != index:
		return "chunk for texture %s inside texture %d" % [chunk.get("textureIndex", 0), index]
	var buffer = state["buffer"]
	if int(str(chunk.get("offset", "0"))) != buffer.size():
		return "texture %d: chunk at offset %s, expected %d" % [index, chunk.get("offset", "0"), buffer.size()]
	buffer.append_array(Marshalls.base64_to_raw(chunk.get("data", "")))
	state["buffer"] = buffer
	if not chunk.get("last", false):
		return ""
	if buffer.size() != int(str(header.get("totalBytes", "0"))):
		return "texture %d: %d bytes, header says %s" % [index, buffer.size(), header.get("totalBytes", "0")]
	var hashing = HashingContext.new()
	hashing.start(HashingContext.HASH_SHA256)
	hashing.update(buffer)
	var sha256 = hashing.finish().hex_encode()
	if sha256 != Marshalls.base64_to_raw(header.get("sha256", "")).hex_encode():
		return "texture %d: SHA-256 does not match the header" % index
	var image = Image.new()
	if image.load_png_from_buffer(buffer) != OK:
		return "texture %d: not a PNG Godot can decode" % index
	print("TEXTURE index=%d seed=%s width=%d height=%d sha256=%s image=%dx%d" % [
		index, header.get("seed", ""), int(header.get("width", 0)), int(header.get("height", 0)), sha256,
		image.get_width(), image.get_height()])
	state["textures"] += 1
	state["header"] = null
	return ""
