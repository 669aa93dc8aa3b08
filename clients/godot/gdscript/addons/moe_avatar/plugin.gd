@tool
extends EditorPlugin
## Adds the "Moe Avatar" dock (prompt -> grid of results -> save as .png + .json in res://).

var _dock: Control


func _enter_tree() -> void:
	_dock = preload("avatar_dock.gd").new()
	_dock.name = "Moe Avatar"
	add_control_to_dock(DOCK_SLOT_RIGHT_UL, _dock)


func _exit_tree() -> void:
	if _dock:
		remove_control_from_docks(_dock)
		_dock.queue_free()
		_dock = null
