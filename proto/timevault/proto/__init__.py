"""TimeVault wire contracts: every NATS message as a msgspec Struct, every subject in `timevault.proto.subjects`.

Wire rules (schema evolution): new fields go last and have defaults; a field's type never
changes; decoders ignore unknown fields so older services skip what newer ones add.
Messages are JSON except the chunk stream to uploaders (`timevault.proto.upload`), which is MessagePack
because it carries raw bytes. JSON Schemas for every message live in ``proto/timevault/proto/schemas/``.
"""
