@tool
class_name MoeAvatarEditSession
extends Node
## Live editing over the bridge's WebSocket (GET /v1/edit), the same stream as gRPC's Edit:
## call update() on every keystroke or slider move; the server works on the newest request only
## and ends each replaced one with a `superseded` event, so only the newest result arrives here.
## Frames are proto JSON: out {"sequence": "N", "request": {GenerateRequest}}, in
## {"sequence": "N", "response": {GenerateResponse}} | {"sequence": "N", "error": {"code", "message"}}
## | {"sequence": "N", "superseded": {"bySequence": "M"}}. Sequences are uint64, so strings.
##
##     var session := MoeAvatarEditSession.new()
##     add_child(session)
##     session.completed.connect(func(textures, infos): $Sprite2D.texture = textures[0])
##     session.open()
##     $LineEdit.text_changed.connect(func(text): session.update(client.build_request_body(text, 1, 7)))

signal progress(stage: String, elapsed_seconds: float, fraction: float)
## The newest request's textures (checksum-verified) and their infos, as MoeAvatarClient.completed.
signal completed(textures: Array[ImageTexture], infos: Array[Dictionary])
## The newest request was refused in-band (e.g. an empty prompt): google.rpc code and message.
signal request_failed(code: int, message: String)
## The socket closed or could not open; call open() again.
signal session_closed(reason: String)

@export var host: String = "127.0.0.1"
@export var port: int = 8080
@export var use_tls: bool = false
## Sent as ?access_token= (the bridge's stand-in for Authorization on a WebSocket).
@export var api_token: String = ""
## Quiet time after the last update() before the request is sent.
@export var debounce_seconds: float = 0.25

var _socket := WebSocketPeer.new()
var _decoder := MoeAvatarClient.new()  # its proto-JSON stream handling, reused
var _sequence := 0
var _pending: Dictionary = {}
var _send_at := 0
var _state: Dictionary = {}
var _was_open := false


func _ready() -> void:
	_decoder.progress.connect(func(stage, elapsed, fraction): progress.emit(stage, elapsed, fraction))


func _exit_tree() -> void:
	close()
	_decoder.free()


## Connects to ws(s)://host:port/v1/edit. Returns the error of WebSocketPeer.connect_to_url.
func open() -> Error:
	var scheme := "wss" if use_tls else "ws"
	var url := "%s://%s:%d/v1/edit" % [scheme, host, port]
	if api_token != "":
		url += "?access_token=" + api_token.uri_encode()
	_was_open = false
	return _socket.connect_to_url(url)


func close() -> void:
	_socket.close()


## Schedules a GenerateRequest (MoeAvatarClient.build_request_body); a later call within the
## debounce time replaces it.
func update(request: Dictionary) -> void:
	_pending = request
	_send_at = Time.get_ticks_msec() + int(debounce_seconds * 1000.0)


func _process(_delta: float) -> void:
	_socket.poll()
	var state := _socket.get_ready_state()
	if state == WebSocketPeer.STATE_OPEN:
		_was_open = true
		if not _pending.is_empty() and Time.get_ticks_msec() >= _send_at:
			_send(_pending)
			_pending = {}
		while _socket.get_available_packet_count() > 0:
			_on_frame(_socket.get_packet().get_string_from_utf8())
	elif state == WebSocketPeer.STATE_CLOSED and _was_open:
		_was_open = false
		session_closed.emit("closed (%d %s)" % [_socket.get_close_code(), _socket.get_close_reason()])


func _send(request: Dictionary) -> void:
	_sequence += 1  # strictly increasing per session, as the server requires
	_state = MoeAvatarClient.new_state()
	_socket.send_text(JSON.stringify({"sequence": str(_sequence), "request": request}))


func _on_frame(text: String) -> void:
	var frame = JSON.parse_string(text)
	if typeof(frame) != TYPE_DICTIONARY:
		return
	if str(frame.get("sequence", "0")).to_int() != _sequence:
		return  # an older request's answer (or its superseded event): the user has moved on
	if frame.has("error"):
		var error: Dictionary = frame["error"]
		request_failed.emit(int(error.get("code", 2)), str(error.get("message", "")))
	elif frame.has("response"):
		var problem := _decoder.handle_event(frame["response"], _state)
		if problem != "":
			request_failed.emit(15, problem)  # 15 = DATA_LOSS: a bad texture for this request only
		elif _state["done"]:
			completed.emit(_state["textures"], _state["infos"])
