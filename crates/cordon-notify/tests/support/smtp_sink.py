"""A real SMTP server for tests: aiosmtpd's command line with this handler.

    python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c smtp_sink.Sink DIR [FAIL_FIRST]

(with this folder on PYTHONPATH). Each message accepted is written to DIR/NNNN.json, whole
(temporary file, then rename): envelope sender and recipients, Subject, From, To, Message-ID,
Content-Transfer-Encoding, and the text body decoded. The first FAIL_FIRST messages (default 0)
are refused with a temporary failure (451), to exercise the sender's retries.
"""

import email
import email.policy
import json
import os


class Sink:
    def __init__(self, directory, fail_first="0"):
        self.directory = directory
        self.fail_first = int(fail_first)
        self.seen = 0
        self.count = 0
        os.makedirs(directory, exist_ok=True)

    @classmethod
    def from_cli(cls, parser, *args):
        if not 1 <= len(args) <= 2:
            parser.error("Sink takes DIR [FAIL_FIRST]")
        return cls(*args)

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        if self.seen <= self.fail_first:
            return "451 4.3.0 try again later (test)"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message["Subject"]),
            "from": str(message["From"]),
            "to": str(message["To"]),
            "message_id": str(message["Message-ID"]),
            "transfer_encoding": str(part["Content-Transfer-Encoding"]) if part is not None else None,
            "body": part.get_content() if part is not None else None,
        }
        self.count += 1
        path = os.path.join(self.directory, "%04d.json" % self.count)
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(path + ".tmp", path)
        return "250 OK"
