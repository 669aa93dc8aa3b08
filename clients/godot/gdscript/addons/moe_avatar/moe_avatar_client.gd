@tool
class_name MoeAvatarClient
extends Node
## Generates avatars through the moe-avatar server's HTTP/JSON bridge (GDScript has no
## HTTP/2, so it cannot speak gRPC). `POST /v1/generate` takes a GenerateRequest in the proto
## JSON mapping (lowerCamelCase keys, uint64 as strings, enums by name) and answers with JSON
## lines, one GenerateResponse each: started, progress, texture (header), chunk (base64
## data), done. Chunks are joined per texture and checked against the header's SHA-256.
## Errors: before the stream, an HTTP status (400, 401, 404, 429, 503, ...) with a JSON body
## {"code", "message", "details": [{"field", "description"}], "requestId"}; after it started,
## a final line {"error": {...the same...}}. `last_error` keeps that Dictionary for the UI.
## Also: interpolate() (POST /v1/interpolate, morph frames), encode_text() (the CLIP embedding),
## read_prompt() (what the model reads from a prompt, without drawing), list_models();
## live editing over the bridge's WebSocket is MoeAvatarEditSession.
## 64-bit integers (seeds, offsets, sizes) are strings in proto JSON: send "seed": "7".
##
##     var client := MoeAvatarClient.new()
##     add_child(client)
##     client.completed.connect(func(textures, infos): $Sprite2D.texture = textures[0])
##     client.generate("pink hair, twin tails", 1, 7)

signal progress(stage: String, elapsed_seconds: float, fraction: float)
## One ImageTexture per avatar (best first) and per texture a Dictionary: index, seed (String),
## clipScore, width, height, format, model, modelVersion, requestId, data (the raw server bytes).
signal completed(textures: Array[ImageTexture], infos: Array[Dictionary])
signal failed(message: String)
signal cancelled
## What the model read from the prompt (sent once per stream, after the prompt is encoded):
## `summary` is one line ("hair_color=pink (0.98); random: bangs, ..."), `reading` the proto
## JSON PromptReading ({"families": [{family, stated, statedProbability, value, valueProbability}]}).
signal prompt_read(summary: String, reading: Dictionary)

const FORMAT_PNG := "TEXTURE_FORMAT_PNG"
const FORMAT_RGBA8 := "TEXTURE_FORMAT_RGBA8"
const FORMAT_WEBP := "TEXTURE_FORMAT_WEBP"
# Proto JSON parsers may print enums as numbers; map them back to names.
const FORMAT_NAMES := {0: FORMAT_PNG, 1: FORMAT_PNG, 2: FORMAT_RGBA8, 3: FORMAT_WEBP}
const STAGE_FRACTION := {
	"STAGE_QUEUED": 0.05, "STAGE_ENCODING_TEXT": 0.1, "STAGE_GENERATING": 0.2,
	"STAGE_SCORING": 0.5, "STAGE_ENCODING_TEXTURES": 0.7,
}

@export var host: String = "127.0.0.1"
## The server's --http-port.
@export var port: int = 8080
@export var use_tls: bool = false
@export var timeout_seconds: float = 60.0
## Sent as "Authorization: Bearer <token>" when the server runs with --auth-tokens-file.
@export var api_token: String = ""

## The bridge's error of the last failed request: code, message, details, requestId ({} if none
## or if the failure was local, e.g. no connection).
var last_error: Dictionary = {}

var _http: HTTPClient = null
var _busy := false
var _cancel_requested := false


func is_busy() -> bool:
	return _busy


## A GenerateRequest in proto JSON. avatar_seed < 0 and psi < 0 leave the choice to the server.
func build_request_body(prompt: String, count: int = 1, avatar_seed: int = -1, psi: float = -1.0,
		format: String = FORMAT_PNG, size: int = 256, model: String = "", model_version: String = "") -> Dictionary:
	var body := {
		"prompt": prompt,
		"count": count,
		# Godot images are top-down, which is also the server's default row order.
		"output": {"format": format, "size": size, "rowOrder": "ROW_ORDER_TOP_DOWN"},
	}
	if avatar_seed >= 0:
		body["seed"] = str(avatar_seed)  # uint64 is a string in the proto JSON mapping
	if psi >= 0.0:
		body["psi"] = psi
	if model != "":
		body["model"] = model
	if model_version != "":
		body["modelVersion"] = model_version
	return body


func generate(prompt: String, count: int = 1, avatar_seed: int = -1, psi: float = -1.0,
		format: String = FORMAT_PNG) -> void:
	await generate_request(build_request_body(prompt, count, avatar_seed, psi, format))


## Morph frames from (start_prompt, start_seed) to (end_prompt, end_seed); completed() gets them in
## order, each info with its position "t" (0..1). Frame 0 equals generate(start_prompt, 1, start_seed).
func interpolate(start_prompt: String, start_seed: int, end_prompt: String, end_seed: int,
		frames: int = 8, psi: float = -1.0) -> void:
	var body := {
		"start": {"prompt": start_prompt, "seed": str(start_seed)},
		"end": {"prompt": end_prompt, "seed": str(end_seed)},
		"frames": frames,
	}
	if psi >= 0.0:
		body["psi"] = psi
	await _stream_request("/v1/interpolate", body)


## Stops the request in flight: closing the connection makes the server drop the work.
func cancel() -> void:
	if _busy:
		_cancel_requested = true


## Sends any GenerateRequest dictionary (e.g. the "request" of a saved sidecar .json).
func generate_request(body: Dictionary) -> void:
	await _stream_request("/v1/generate", body)


func _stream_request(path: String, body: Dictionary) -> void:
	if _busy:
		cancel()
		while _busy:
			await get_tree().process_frame
	_busy = true
	_cancel_requested = false
	last_error = {}
	var error := await _run(path, body)
	_http.close()
	_busy = false
	if _cancel_requested:
		cancelled.emit()
	elif error != "":
		failed.emit(error)


func _run(path: String, body: Dictionary) -> String:
	var deadline := Time.get_ticks_msec() + int(timeout_seconds * 1000.0)
	_http = HTTPClient.new()
	var tls: TLSOptions = TLSOptions.client() if use_tls else null
	if _http.connect_to_host(host, port, tls) != OK:
		return "cannot connect to %s:%d" % [host, port]
	while _http.get_status() in [HTTPClient.STATUS_RESOLVING, HTTPClient.STATUS_CONNECTING]:
		if not await _tick(deadline):
			return _stop_reason()
	if _http.get_status() != HTTPClient.STATUS_CONNECTED:
		return "cannot connect to %s:%d (is the server running with --http-port %d?)" % [host, port, port]

	var headers := _headers(["Content-Type: application/json", "Accept: application/x-ndjson"])
	if _http.request(HTTPClient.METHOD_POST, path, headers, JSON.stringify(body)) != OK:
		return "request failed"
	while _http.get_status() == HTTPClient.STATUS_REQUESTING:
		if not await _tick(deadline):
			return _stop_reason()
	if not _http.has_response():
		return "no response"
	var status_code := _http.get_response_code()

	var state := new_state()
	var pending := PackedByteArray()
	var error_body := PackedByteArray()
	while _http.get_status() == HTTPClient.STATUS_BODY:
		var chunk := _http.read_response_body_chunk()
		if chunk.is_empty():
			if not await _tick(deadline):
				return _stop_reason()
			continue
		if status_code != 200:
			error_body.append_array(chunk)
			continue
		pending.append_array(chunk)
		# One JSON document per line; a line may span several network reads.
		var newline := pending.find(10)
		while newline != -1:
			var line := pending.slice(0, newline).get_string_from_utf8().strip_edges()
			pending = pending.slice(newline + 1)
			newline = pending.find(10)
			if line == "":
				continue
			var error := _handle_line(line, state)
			if error != "":
				return error
	if status_code != 200:
		return _bridge_error(status_code, error_body.get_string_from_utf8())
	if not pending.is_empty():
		var error := _handle_line(pending.get_string_from_utf8().strip_edges(), state)
		if error != "":
			return error
	if not state["done"]:
		return "the stream ended before its done event"
	completed.emit(state["textures"], state["infos"])
	return ""


func _headers(extra: Array) -> PackedStringArray:
	var headers := PackedStringArray(extra)
	if api_token != "":
		headers.append("Authorization: Bearer " + api_token)
	return headers


## An error body of the bridge (or any other HTTP error) as one message.
func _bridge_error(status_code: int, text: String) -> String:
	var parsed = JSON.parse_string(text)
	if typeof(parsed) != TYPE_DICTIONARY or not parsed.has("code"):
		return "HTTP %d: %s" % [status_code, text.left(200)]
	return "HTTP %d %s" % [status_code, _describe_error(parsed)]


## {"code": "INVALID_ARGUMENT", "message": "...", "details": [{"field", "description"}]} -> text.
func _describe_error(error: Dictionary) -> String:
	last_error = error
	var text := "%s: %s" % [error.get("code", "UNKNOWN"), error.get("message", "")]
	if error.has("requestId"):
		text += " (request id %s)" % error["requestId"]
	return text


## Fields the server rejected, e.g. ["count", "output.size"], for highlighting controls.
func last_error_fields() -> PackedStringArray:
	var fields := PackedStringArray()
	for detail in last_error.get("details", []):
		fields.append(str(detail.get("field", "")))
	return fields


## Polls the connection and waits one frame; false when cancelled or past the deadline.
func _tick(deadline: int) -> bool:
	_http.poll()
	if _cancel_requested or Time.get_ticks_msec() > deadline:
		return false
	await get_tree().process_frame
	return not _cancel_requested


func _stop_reason() -> String:
	return "cancelled" if _cancel_requested else "timed out after %.0f s" % timeout_seconds


## What one response stream collects: textures, infos and whether `done` arrived.
static func new_state() -> Dictionary:
	return {"textures": [] as Array[ImageTexture], "infos": [] as Array[Dictionary], "done": false}


func _handle_line(line: String, state: Dictionary) -> String:
	var event = JSON.parse_string(line)
	if typeof(event) != TYPE_DICTIONARY:
		return "bad JSON line from the server: %s" % line.left(200)
	return handle_event(event, state)


## Handles one GenerateResponse (proto JSON). Returns an error message, or "".
func handle_event(event: Dictionary, state: Dictionary) -> String:
	if event.has("error"):  # the stream failed after it started
		return _describe_error(event["error"])
	if event.has("started"):
		var started: Dictionary = event["started"]
		state["requestId"] = started.get("requestId", "")
		state["model"] = started.get("model", "")
		state["modelVersion"] = started.get("modelVersion", "")
		state["psi"] = float(started.get("psi", 0.0))
	elif event.has("progress"):
		var p: Dictionary = event["progress"]
		var stage: String = str(p.get("stage", "STAGE_UNSPECIFIED"))
		progress.emit(stage, float(p.get("elapsedSeconds", 0.0)), STAGE_FRACTION.get(stage, 0.0))
	elif event.has("texture"):
		# proto JSON leaves out fields at their default (0, false, ""): always .get() with a default.
		state["header"] = event["texture"]
		state["buffer"] = PackedByteArray()
	elif event.has("chunk"):
		return _add_chunk(event["chunk"], state)
	elif event.has("reading"):
		prompt_read.emit(reading_summary(event["reading"]), event["reading"])
	elif event.has("done"):
		var done: Dictionary = event["done"]
		if int(done.get("textureCount", 0)) != state["textures"].size():
			return "server sent %d textures but done says %s" % [state["textures"].size(), done.get("textureCount", 0)]
		state["done"] = true
	return ""


func _add_chunk(chunk: Dictionary, state: Dictionary) -> String:
	if not state.has("header"):
		return "chunk without a texture header"
	var header: Dictionary = state["header"]
	var index := int(header.get("index", 0))
	if int(chunk.get("textureIndex", 0)) != index:
		return "chunk for texture %s inside texture %d" % [chunk.get("textureIndex", 0), index]
	var buffer: PackedByteArray = state["buffer"]
	if str(chunk.get("offset", "0")).to_int() != buffer.size():  # uint64: a string in proto JSON
		return "texture %d: chunk at offset %s, expected %d" % [index, chunk.get("offset", "0"), buffer.size()]
	buffer.append_array(Marshalls.base64_to_raw(chunk.get("data", "")))
	state["buffer"] = buffer
	if not chunk.get("last", false):
		return ""

	if buffer.size() != str(header.get("totalBytes", "0")).to_int():
		return "texture %d: got %d bytes, header says %s" % [index, buffer.size(), header.get("totalBytes", "0")]
	var hashing := HashingContext.new()
	hashing.start(HashingContext.HASH_SHA256)
	hashing.update(buffer)
	if hashing.finish() != Marshalls.base64_to_raw(header.get("sha256", "")):
		return "texture %d: SHA-256 does not match the header" % index
	var format = header.get("format", FORMAT_PNG)
	if typeof(format) != TYPE_STRING:
		format = FORMAT_NAMES.get(int(format), FORMAT_PNG)
	var width := int(header.get("width", 0))
	var height := int(header.get("height", 0))
	var image := decode_image(buffer, format, width, height)
	if image == null:
		return "texture %d: cannot decode %s" % [index, format]
	state["textures"].append(ImageTexture.create_from_image(image))
	state["infos"].append({
		"index": index,
		"seed": str(header.get("seed", "")),  # uint64 stays a string: Godot ints are signed 64-bit
		"clipScore": float(header.get("clipScore", 0.0)),
		"width": width,
		"height": height,
		"format": format,
		"t": float(header.get("t", 0.0)),
		"psi": state.get("psi", 0.0),
		"model": state.get("model", ""),
		"modelVersion": state.get("modelVersion", ""),
		"requestId": state.get("requestId", ""),
		"data": buffer,
	})
	state.erase("header")
	return ""


## PNG / WebP bytes, or raw top-down RGBA8, to an Image (null if the bytes are bad).
static func decode_image(data: PackedByteArray, format: String, width: int, height: int) -> Image:
	if format == FORMAT_RGBA8:
		if data.size() != width * height * 4:
			return null
		return Image.create_from_data(width, height, false, Image.FORMAT_RGBA8, data)
	var image := Image.new()
	var error := image.load_webp_from_buffer(data) if format == FORMAT_WEBP else image.load_png_from_buffer(data)
	return image if error == OK else null


## GET /v1/models: the ListModelsResponse as a Dictionary ({} on failure).
func list_models() -> Dictionary:
	return await _fetch_json(HTTPClient.METHOD_GET, "/v1/models", {})


## The prompt's CLIP text embedding (L2-normalised; empty on failure, last_error says why).
func encode_text(prompt: String, model: String = "") -> PackedFloat32Array:
	var body := {"prompt": prompt}
	if model != "":
		body["model"] = model
	var response := await _fetch_json(HTTPClient.METHOD_POST, "/v1/encode-text", body)
	return PackedFloat32Array(response.get("embedding", []))


## What the model reads from the prompt (EncodeText's reading, proto JSON): per family whether
## the prompt states it, the value and the probabilities. {} for a model that does not say
## (ModelInfo.readsPrompts false) or on failure (last_error says why). reading_summary() makes
## the one-line text.
func read_prompt(prompt: String, model: String = "") -> Dictionary:
	var body := {"prompt": prompt}
	if model != "":
		body["model"] = model
	var response := await _fetch_json(HTTPClient.METHOD_POST, "/v1/encode-text", body)
	return response.get("reading", {})


## One line, as the Python CLI prints it: the stated families with value and probability, then
## the open ones ("random"). Proto JSON leaves out false and 0: read with defaults.
static func reading_summary(reading: Dictionary) -> String:
	var families: Array = reading.get("families", [])
	if families.is_empty():
		return "the model does not report what it read"
	var stated: PackedStringArray = []
	var open: PackedStringArray = []
	for f: Dictionary in families:
		if f.get("stated", false):
			stated.append("%s=%s (%.2f)" % [f.get("family", ""), f.get("value", ""), float(f.get("valueProbability", 0.0))])
		else:
			open.append(str(f.get("family", "")))
	var line := ", ".join(stated) if not stated.is_empty() else "nothing stated"
	return line + ("; random: " + ", ".join(open) if not open.is_empty() else "")


## One unary call: the JSON answer as a Dictionary, {} on failure (last_error has the bridge's error).
func _fetch_json(method: int, path: String, body: Dictionary) -> Dictionary:
	var request := HTTPRequest.new()
	add_child(request)
	var scheme := "https" if use_tls else "http"
	request.timeout = timeout_seconds
	var url := "%s://%s:%d%s" % [scheme, host, port, path]
	var sent := request.request(url, _headers([]), method) if method == HTTPClient.METHOD_GET \
		else request.request(url, _headers(["Content-Type: application/json"]), method, JSON.stringify(body))
	if sent != OK:
		request.queue_free()
		return {}
	var result: Array = await request.request_completed  # [result, code, headers, body]
	request.queue_free()
	if result[0] != HTTPRequest.RESULT_SUCCESS:
		return {}
	var parsed = JSON.parse_string(result[3].get_string_from_utf8())
	if typeof(parsed) != TYPE_DICTIONARY:
		return {}
	if result[1] != 200:
		last_error = parsed
		return {}
	return parsed
