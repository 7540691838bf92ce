"""KIS's answer shapes: the ``rt_cd``/``msg_cd``/``msg1`` envelope, the OAuth error body, and the codes they carry.

Messages are KIS's own texts (KIS.md section 5.2, and the portal FAQ's code
table mirrored by kt_kisopenapi). Gateway errors (``EGW…``, ``OPSQ9…``) go out
with HTTP 500 and the normal envelope; business refusals with HTTP 200 and
``rt_cd`` "1"; OAuth errors with the ``{error_description, error_code}`` body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MESSAGES: dict[str, str] = {
    "EGW00002": "서버 에러가 발생했습니다.",
    "EGW00101": "유효하지 않은 요청입니다.",
    "EGW00102": "AppKey는 필수입니다.",
    "EGW00103": "유효하지 않은 AppKey입니다.",
    "EGW00104": "AppSecret은 필수입니다.",
    "EGW00105": "유효하지 않은 AppSecret입니다.",
    "EGW00115": "권한부여 타입(grant_type)은 필수입니다.",
    "EGW00116": "지원하지 않는 권한부여 타입(grant_type)입니다.",
    "EGW00121": "유효하지 않은 token 입니다.",
    "EGW00123": "기간이 만료된 token 입니다.",
    "EGW00132": "Content-Type이 유효하지 않습니다.",
    "EGW00133": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
    "EGW00201": "초당 거래건수를 초과하였습니다.",
    "EGW00205": "credentials_type이 유효하지 않습니다.(Bearer)",
    "EGW00208": "고객유형(custtype)이 유효하지 않습니다.",
    "EGW00301": "연결 시간이 초과되었습니다.직전 거래를 반드시 확인하세요.",
    "EGW02004": "실전투자 도메인은 모의투자 앱키로 호출하실 수 없습니다.",
    "EGW02006": "모의투자 TR 이 아닙니다.",
    "EGW02007": "해당 앱키는 모의투자용 앱키가 아닙니다",
    "MCA00124": "해당 서비스를 찾을수 없습니다.",
    "OPSQ0002": "없는 서비스 코드 입니다.",
    "OPSQ2000": "ERROR : INPUT INVALID_CHECK_ACNO",
    "OPSQ2001": "ERROR : INPUT INVALID_CHECK_MRKT_DIV_CODE",
    "OPSQ2002": "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH",
    "OPSQ9997": "JSON PARSING ERROR : invalid json format",
    "OPSQ9999": "JSON PARSING ERROR : tr_id not found",
    "90000000": "모의투자에서는 해당업무가 제공되지 않습니다.",
    "40570000": "모의투자 장시작전 입니다.",
    "KIOK0510": "조회가 완료되었습니다",
    "KIOK0420": "정상적으로 조회되었습니다",
    "MCA00000": "정상처리 되었습니다.",
}

MSG1_WIDTH_BYTES = 80  # msg1 is a fixed-width field: KIS pads query messages with spaces


def pad_msg1(text: str) -> str:
    """``text`` right-padded with spaces to KIS's 80-byte msg1 field (Hangul counted as two bytes, as EUC-KR)."""
    width = len(text.encode("euc-kr", errors="replace"))
    return text + " " * max(0, MSG1_WIDTH_BYTES - width)


def dumps(body: Any) -> bytes:
    """JSON as KIS sends it: UTF-8, Hangul unescaped."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(slots=True)
class KisError(Exception):
    """A refusal to send back as KIS would: status, code and (optionally) a message other than the standard one."""

    msg_cd: str
    status: int = 500
    msg1: str = ""
    oauth: bool = False  # the /oauth2 body shape

    def body(self) -> dict[str, Any]:
        text = self.msg1 or MESSAGES.get(self.msg_cd, self.msg_cd)
        if self.oauth:
            return {"error_description": text, "error_code": self.msg_cd}
        return {"rt_cd": "1", "msg_cd": self.msg_cd, "msg1": text}


def refusal(msg_cd: str, msg1: str = "") -> KisError:
    """A business refusal: HTTP 200, ``rt_cd`` "1"."""
    return KisError(msg_cd, 200, msg1)


def ok(msg_cd: str, msg1: str = "", *, padded: bool = False, **outputs: Any) -> dict[str, Any]:
    """A success envelope with its outputs (``output``, ``output1``, ``ctx_area_fk100``, ...)."""
    text = msg1 or MESSAGES.get(msg_cd, "")
    return {"rt_cd": "0", "msg_cd": msg_cd, "msg1": pad_msg1(text) if padded else text, **outputs}
