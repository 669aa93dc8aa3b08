"""Generated gRPC/protobuf code for the moe-avatar API (see v1/avatar.proto)."""
