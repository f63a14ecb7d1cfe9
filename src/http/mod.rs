//! HTTP routes served beside the WebSocket upgrade.
