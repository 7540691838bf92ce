"""H0STCNI0 / H0STCNI9 execution notices: the record layout and its AES-256-CBC envelope.

A notice is one ``^``-separated record, encrypted with the key and iv the
subscription ack handed out (AES-256-CBC, PKCS#7, base64; KIS.md section 6.5)
and framed ``1|<tr_id>|001|<base64>``. The current layout has 26 fields; the
older 23-field layout (fields 0-17, then name, credit class, loan date, name,
order price) is available as an option for clients written against it
(KIS.md section 6.7).
"""

from __future__ import annotations

import base64
import secrets
import string
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_ALPHABET = string.ascii_letters + string.digits


@dataclass(slots=True)
class Notice:
    """One order or fill notice (before formatting); quantities and prices in shares and won."""

    order_no: str  # ODER_NO, 10 digits
    original_no: str  # OODER_NO ("" for a new order)
    side: str  # "01" sell, "02" buy
    correction: str  # RCTF_CLS: "0" normal, "1" revise, "2" cancel
    kind: str  # ODER_KIND: the ORD_DVSN code
    condition: str  # ODER_COND: "0" none, "1" IOC, "2" FOK
    code: str
    qty: int  # CNTG_QTY: the fill's quantity, or the order's in an acknowledgement
    price: int  # CNTG_UNPR
    hms: str
    refused: bool  # RFUS_YN "1"
    fill: bool  # CNTG_YN "2"
    accept: str  # ACPT_YN: "1" accepted, "2" confirmed, "3" cancelled (IOC/FOK)
    order_qty: int
    order_price: int
    name: str


def record(n: Notice, *, hts_id: str, account: str, branch: str, account_name: str, fields: int = 26) -> str:
    """The plain ``^``-separated notice record in the 26- or 23-field layout."""
    head = [
        hts_id, account.replace("-", ""), n.order_no, n.original_no, n.side, n.correction, n.kind, n.condition,
        n.code, f"{n.qty:010d}", f"{n.price:09d}", n.hms, "1" if n.refused else "0", "2" if n.fill else "1",
        n.accept, branch, f"{n.order_qty:09d}", account_name,
    ]
    if fields == 23:
        return "^".join(head + [n.name, "10", "", n.name, f"{n.order_price:09d}"])
    return "^".join(head + ["", "1", "N", "", "10", "", n.name, f"{n.order_price:09d}"])


def new_key_iv() -> tuple[str, str]:
    """A fresh 32-character key and 16-character iv, ASCII like KIS's."""
    return ("".join(secrets.choice(KEY_ALPHABET) for _ in range(32)),
            "".join(secrets.choice(KEY_ALPHABET) for _ in range(16)))


def encrypt(plain: str, key: str, iv: str) -> str:
    """base64(AES-256-CBC(PKCS7(utf-8 plain))) with the ack's key and iv as UTF-8 bytes."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode("utf-8")) + padder.finalize()
    enc = Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8"))).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode("ascii")


def decrypt(cipher_b64: str, key: str, iv: str) -> str:
    """The inverse of ``encrypt`` (what a client does)."""
    dec = Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8"))).decryptor()
    data = dec.update(base64.b64decode(cipher_b64)) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(data) + unpadder.finalize()).decode("utf-8")
