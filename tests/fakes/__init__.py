"""Strict local stand-ins for the CRMs' APIs, served over HTTP so the real SDKs talk to them."""
