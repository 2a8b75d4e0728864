"""A small scripted Redfish BMC over TLS, for the cases sushy-tools cannot produce.

Usage: mock_bmc.py --cert CERT --key KEY --scenario NAME
Prints "PORT <n>" once it listens on 127.0.0.1:<n>. The password is read from the
MOCK_BMC_PASSWORD environment variable (user "admin"). GET /test/log (no auth) returns the
requests seen so far: [{"method", "path", "auth"}], auth being "basic", "token" or "none".

Scenarios:
  status500        the system answers 500 with a Redfish error body
  malformed        the system answers 200 with a body that is not JSON
  sessions         the service root lists Links.Sessions; only the session token is accepted
                   for the system (Basic is refused); reset types come from an ActionInfo;
                   GracefulRestart: Off for 0.4 s, then On
  ignore-graceful  Basic auth; GracefulRestart is accepted and ignored; ForceRestart changes
                   LastResetTime only (PowerState stays On)
  stuck            Basic auth; every reset is accepted and nothing ever changes
"""

import argparse
import base64
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER = "admin"
PASSWORD = os.environ.get("MOCK_BMC_PASSWORD", "")
TOKEN = "tok-0123456789abcdef"
SYSTEM = "/redfish/v1/Systems/1"
SESSION = "/redfish/v1/SessionService/Sessions/42"

LOCK = threading.Lock()
LOG = []
STATE = {"power": "On", "on_at": None, "reset_time": "2026-11-27T10:00:00+00:00"}


def power_state():
    with LOCK:
        if STATE["on_at"] is not None and time.time() >= STATE["on_at"]:
            STATE["power"] = "On"
            STATE["on_at"] = None
        return STATE["power"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    scenario = "stuck"

    def log_message(self, fmt, *args):  # quiet
        pass

    def auth_kind(self):
        header = self.headers.get("Authorization", "")
        if self.headers.get("X-Auth-Token"):
            return "token"
        if header.lower().startswith("basic "):
            return "basic"
        return "none"

    def authorised(self):
        kind = self.auth_kind()
        if kind == "token":
            return self.headers.get("X-Auth-Token") == TOKEN
        if kind == "basic":
            if self.scenario == "sessions":
                return False
            try:
                user, _, password = base64.b64decode(
                    self.headers["Authorization"].split()[1]).decode().partition(":")
            except Exception:  # noqa: BLE001
                return False
            return user == USER and password == PASSWORD
        return False

    def reply(self, status, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def error(self, status, message):
        self.reply(status, {"error": {"code": "Base.1.0.GeneralError", "message": message}})

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def record(self):
        with LOCK:
            LOG.append({"method": self.command, "path": self.path, "auth": self.auth_kind()})

    def do_GET(self):
        if self.path == "/test/log":
            with LOCK:
                return self.reply(200, list(LOG))
        self.record()
        if self.path.rstrip("/") == "/redfish/v1":
            root = {"Systems": {"@odata.id": "/redfish/v1/Systems"}}
            if self.scenario == "sessions":
                root["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
                root["Links"] = {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
            return self.reply(200, root)
        if not self.authorised():
            return self.error(401, "Incorrect username or password")
        if self.path == SYSTEM:
            if self.scenario == "status500":
                return self.error(500, "Internal controller failure")
            if self.scenario == "malformed":
                return self.reply(200, raw=b"<html>not json")
            reset = {"target": SYSTEM + "/Actions/ComputerSystem.Reset"}
            if self.scenario == "sessions":
                reset["@Redfish.ActionInfo"] = SYSTEM + "/ResetActionInfo"
            else:
                reset["ResetType@Redfish.AllowableValues"] = ["On", "ForceOff", "GracefulRestart", "ForceRestart"]
            system = {"Id": "1", "PowerState": power_state(), "Actions": {"#ComputerSystem.Reset": reset}}
            if self.scenario == "ignore-graceful":
                with LOCK:
                    system["LastResetTime"] = STATE["reset_time"]
            return self.reply(200, system)
        if self.path == SYSTEM + "/ResetActionInfo":
            return self.reply(200, {"Parameters": [
                {"Name": "ResetType", "AllowableValues": ["On", "ForceOff", "GracefulRestart", "ForceRestart"]}]})
        return self.error(404, "not found")

    def do_POST(self):
        self.record()
        body = self.body()
        if self.path == "/redfish/v1/SessionService/Sessions" and self.scenario == "sessions":
            if body and body.get("UserName") == USER and body.get("Password") == PASSWORD:
                return self.reply(201, {"Id": "42", "UserName": USER},
                                  {"X-Auth-Token": TOKEN, "Location": SESSION})
            return self.error(401, "Invalid credentials")
        if not self.authorised():
            return self.error(401, "Incorrect username or password")
        if self.path == SYSTEM + "/Actions/ComputerSystem.Reset":
            reset_type = (body or {}).get("ResetType")
            with LOCK:
                if self.scenario == "sessions" and reset_type in ("GracefulRestart", "ForceRestart"):
                    STATE["power"] = "Off"
                    STATE["on_at"] = time.time() + 0.4
                elif self.scenario == "ignore-graceful" and reset_type == "ForceRestart":
                    STATE["reset_time"] = "2026-11-27T10:05:00+00:00"
            return self.reply(204)
        return self.error(404, "not found")

    def do_DELETE(self):
        self.record()
        if self.path == SESSION and self.headers.get("X-Auth-Token") == TOKEN:
            return self.reply(204)
        return self.error(401, "Incorrect username or password")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--scenario", required=True,
                        choices=["status500", "malformed", "sessions", "ignore-graceful", "stuck"])
    args = parser.parse_args()
    Handler.scenario = args.scenario
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
