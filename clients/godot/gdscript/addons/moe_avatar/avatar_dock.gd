@tool
extends VBoxContainer
## Editor dock, built in code so there is no scene file to keep in sync: a designer types a
## prompt, browses the results and saves ticked ones as <name>.png + <name>.json in res://.
## The .json's "request" is the exact GenerateRequest (proto JSON) for that one texture, so it
## can be regenerated bit-exactly (same server build + model version) by POSTing it again.

const Client := preload("moe_avatar_client.gd")

var _client: Client
var _host: LineEdit
var _port: SpinBox
var _token: LineEdit
var _prompt: TextEdit
var _count: SpinBox
var _seed: LineEdit
var _psi: HSlider
var _generate: Button
var _cancel: Button
var _progress: ProgressBar
var _status: Label
var _grid: GridContainer
var _folder: LineEdit
var _results: Array[Dictionary] = []  # {"texture", "info", "check"}
var _last_request: Dictionary = {}
var _read_line := ""  # what the model read from the prompt (the stream's reading event)


func _ready() -> void:
	_client = Client.new()
	add_child(_client)
	_client.progress.connect(func(stage: String, _elapsed: float, fraction: float) -> void:
		_progress.value = fraction
		_status.text = stage)
	_client.completed.connect(_on_completed)
	_client.prompt_read.connect(func(summary: String, _reading: Dictionary) -> void: _read_line = summary)
	_client.failed.connect(func(message: String) -> void:
		# Name the rejected fields (e.g. "count", "prompt") so the designer knows what to fix.
		var fields := _client.last_error_fields()
		_set_busy(false, message if fields.is_empty() else "%s\nCheck: %s" % [message, ", ".join(fields)]))
	_client.cancelled.connect(func() -> void: _set_busy(false, "Cancelled."))

	var server := HBoxContainer.new()
	_host = _line_edit("127.0.0.1", "host")
	_host.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	_port = SpinBox.new()
	_port.max_value = 65535
	_port.value = 8080
	_port.tooltip_text = "the server's --http-port"
	server.add_child(_host)
	server.add_child(_port)
	add_child(server)
	_token = _line_edit("", "bearer token (only if the server needs one)")
	_token.secret = true
	add_child(_token)

	_prompt = TextEdit.new()
	_prompt.placeholder_text = "pink hair, twin tails / 蓝发猫耳少女"
	_prompt.custom_minimum_size = Vector2(0, 60)
	add_child(_prompt)

	var knobs := HBoxContainer.new()
	_count = SpinBox.new()
	_count.min_value = 1
	_count.max_value = 16
	_count.value = 8
	_count.prefix = "count"
	_seed = _line_edit("", "seed (empty = random)")
	_psi = HSlider.new()
	_psi.min_value = 0.0
	_psi.max_value = 2.0
	_psi.step = 0.05
	_psi.value = 0.7
	_psi.tooltip_text = "psi: 0 = the average avatar for the prompt, 1 = most varied"
	_psi.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	for control in [_count, _seed, _psi]:
		knobs.add_child(control)
	add_child(knobs)

	var buttons := HBoxContainer.new()
	_generate = _button("Generate", _on_generate)
	_cancel = _button("Cancel", func() -> void: _client.cancel())
	_cancel.disabled = true
	buttons.add_child(_generate)
	buttons.add_child(_cancel)
	add_child(buttons)

	_progress = ProgressBar.new()
	_progress.max_value = 1.0
	add_child(_progress)
	_status = Label.new()
	_status.autowrap_mode = TextServer.AUTOWRAP_WORD_SMART
	add_child(_status)

	var scroll := ScrollContainer.new()
	scroll.size_flags_vertical = Control.SIZE_EXPAND_FILL
	scroll.custom_minimum_size = Vector2(0, 200)
	_grid = GridContainer.new()
	_grid.columns = 3
	scroll.add_child(_grid)
	add_child(scroll)

	_folder = _line_edit("res://avatars", "save folder")
	add_child(_folder)
	add_child(_button("Save selected (.png + .json)", _on_save))


func _line_edit(text: String, placeholder: String) -> LineEdit:
	var edit := LineEdit.new()
	edit.text = text
	edit.placeholder_text = placeholder
	return edit


func _button(text: String, on_pressed: Callable) -> Button:
	var button := Button.new()
	button.text = text
	button.pressed.connect(on_pressed)
	return button


func _set_busy(busy: bool, message: String = "") -> void:
	_generate.disabled = busy
	_cancel.disabled = not busy
	_status.text = message


func _on_generate() -> void:
	_read_line = ""
	var prompt := _prompt.text.strip_edges()
	if prompt == "":
		_status.text = "Type a prompt first."
		return
	_client.host = _host.text.strip_edges()
	_client.port = int(_port.value)
	_client.api_token = _token.text.strip_edges()
	var avatar_seed := _seed.text.strip_edges().to_int() if _seed.text.strip_edges().is_valid_int() else -1
	_last_request = _client.build_request_body(prompt, int(_count.value), avatar_seed, _psi.value)
	_progress.value = 0.0
	_set_busy(true, "Sending…")
	_client.generate_request(_last_request)


func _on_completed(textures: Array[ImageTexture], infos: Array[Dictionary]) -> void:
	for child in _grid.get_children():
		child.queue_free()
	_results.clear()
	for i in textures.size():
		var cell := VBoxContainer.new()
		var preview := TextureRect.new()
		preview.texture = textures[i]
		preview.custom_minimum_size = Vector2(96, 96)
		preview.expand_mode = TextureRect.EXPAND_IGNORE_SIZE
		preview.stretch_mode = TextureRect.STRETCH_KEEP_ASPECT_CENTERED
		var check := CheckBox.new()
		check.text = "seed %s  %.2f" % [infos[i]["seed"], infos[i]["clipScore"]]
		cell.add_child(preview)
		cell.add_child(check)
		_grid.add_child(cell)
		_results.append({"texture": textures[i], "info": infos[i], "check": check})
	var first: Dictionary = infos[0] if infos.size() > 0 else {}
	var line := "%d avatars from %s %s" % [textures.size(), first.get("model", ""), first.get("modelVersion", "")]
	_set_busy(false, line + ("\nRead: " + _read_line if _read_line != "" else ""))
	_progress.value = 1.0


func _on_save() -> void:
	var folder := _folder.text.strip_edges().trim_suffix("/")
	DirAccess.make_dir_recursive_absolute(folder)
	var saved := 0
	for result in _results:
		if not result["check"].button_pressed:
			continue
		var info: Dictionary = result["info"]
		var base := "%s/%s_%s" % [folder, _slug(_last_request.get("prompt", "avatar")), info["seed"]]
		# The request that reproduces exactly this texture: its own seed, count 1, the resolved model version.
		var request := _last_request.duplicate(true)
		request["count"] = 1
		request["seed"] = info["seed"]
		request["psi"] = info["psi"]
		request["model"] = info["model"]
		request["modelVersion"] = info["modelVersion"]
		var sidecar := {
			"request": request,
			"clipScore": info["clipScore"],
			"requestId": info["requestId"],
			"createdAt": Time.get_datetime_string_from_system(true) + "Z",
		}
		var error := _write(base + ".png", info["data"]) if info["format"] == Client.FORMAT_PNG \
			else result["texture"].get_image().save_png(base + ".png")
		if error != OK:
			_status.text = "Cannot write %s.png (error %d)" % [base, error]
			return
		var json := FileAccess.open(base + ".json", FileAccess.WRITE)
		if json == null:
			_status.text = "Cannot write %s.json (error %d)" % [base, FileAccess.get_open_error()]
			return
		json.store_string(JSON.stringify(sidecar, "  "))
		json.close()
		saved += 1
	# Let the editor import the new PNGs now rather than on the next focus change.
	EditorInterface.get_resource_filesystem().scan()
	_status.text = "Saved %d avatars to %s" % [saved, folder]


## Writes the server's PNG bytes as they are: re-encoding would break the bit-exact match.
func _write(path: String, bytes: PackedByteArray) -> Error:
	var file := FileAccess.open(path, FileAccess.WRITE)
	if file == null:
		return FileAccess.get_open_error()
	file.store_buffer(bytes)
	file.close()
	return OK


static func _slug(text: String) -> String:
	var out := ""
	for c in text.strip_edges().left(32):
		# Letters of any script stay (Chinese prompts give Chinese file names); the rest become "_".
		out += c if c.is_valid_identifier() or c.is_valid_int() or c.unicode_at(0) > 127 else "_"
	return out if out != "" else "avatar"
