"""Loopback stand-ins for the network services Forge talks to but cannot reach here (Gemini, an
OpenAI-compatible LLM server). Each speaks the service's real HTTP wire format and records
what it received."""
