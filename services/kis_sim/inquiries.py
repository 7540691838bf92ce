"""KIS's query TRs for domestic stocks, answered from the paper market and the order desk.

Pure functions of (query parameters, desk, market, flavour) returning the body
and the response ``tr_cont``. Query parameter names are matched
case-insensitively (the samples send both cases, KIS.md section 2.1); every
number goes out as a string. Paged TRs (daily orders, balance, cancellable
orders) cut their rows at the flavour's page size and hand back space-padded
``ctx_area_fk100`` / ``ctx_area_nk100`` cursors; a cursor is accepted with or
without its padding (KIS.md section 12). The response ``tr_cont`` is "M" while
more rows follow and "D" on the last page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.krx import tick_size
from services.kis_sim.market import KisMarket, hhmmss
from services.kis_sim.orders import ACCOUNT_ID, KisOrder, OrderDesk
from services.kis_sim.replies import KisError, ok

CTX_WIDTH = 100
MARKET_CODES = ("J", "NX", "UN")
DVSN_NAMES = {"00": "지정가", "01": "시장가", "03": "최유리지정가", "11": "IOC지정가", "13": "IOC시장가"}
MINUTE_ROWS = 30
INVESTOR_ROWS = 30

Query = dict[str, str]
Answer = tuple[dict[str, Any], str]  # body, response tr_cont ("" when the TR is not paged)


def _pct(num: float, den: float) -> str:
    return f"{num * 100 / den:.2f}" if den else "0.00"


def _pad(cursor: str) -> str:
    return cursor.ljust(CTX_WIDTH)


def _field(q: Query, key: str, *, required: bool = True, allowed: tuple[str, ...] | None = None) -> str:
    value = q.get(key)
    if value is None:
        if required:
            raise KisError("OPSQ2002", 200, f"ERROR : INPUT INVALID_CHECK_FIELD_LENGTH ({key} 필수)")
        return ""
    if allowed is not None and value not in allowed:
        raise KisError("OPSQ2002", 200, f"ERROR : INPUT INVALID_CHECK_FIELD_LENGTH ({key})")
    return value


def _account(q: Query, desk: OrderDesk) -> None:
    desk.check_account({"CANO": q.get("CANO"), "ACNT_PRDT_CD": q.get("ACNT_PRDT_CD")})


def _page(rows: list[Any], key_of: Any, q: Query, tr_cont_in: str, size: int, fk: str,
          cursor_prefix: str) -> tuple[list[Any], str, str, str]:
    """Cut one page after the cursor: (rows, tr_cont, fk100, nk100)."""
    start = 0
    if tr_cont_in == "N":
        nk = q.get("CTX_AREA_NK100", "").strip()
        if not nk.startswith(cursor_prefix):
            raise KisError("OPSQ2002", 200, "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH (CTX_AREA_NK100)")
        last = nk[len(cursor_prefix):]
        keys = [key_of(r) for r in rows]
        start = keys.index(last) + 1 if last in keys else len(rows)
    page = rows[start:start + size]
    more = start + size < len(rows)
    nk100 = _pad(cursor_prefix + key_of(page[-1])) if more and page else _pad("")
    return page, "M" if more else "D", _pad(fk), nk100


# --- inquire-daily-ccld -----------------------------------------------------------------


def _ccld_row(o: KisOrder, desk: OrderDesk, market: KisMarket, spellings: bool) -> dict[str, str]:
    inst = desk.instruments.get(o.code)
    avg = o.filled_value_won // o.filled_qty if o.filled_qty else 0
    row = {
        "ord_dt": o.ord_dt, "ord_gno_brno": desk.flavour.branch, "odno": desk.reply_odno(o.odno),
        "orgn_odno": desk.reply_odno(o.orgn_odno) if o.orgn_odno else "",
        "ord_dvsn_name": DVSN_NAMES.get(o.ord_dvsn, o.ord_dvsn) if o.kind == "new" else
        ("정정" if o.kind == "revise" else "취소") + DVSN_NAMES.get(o.ord_dvsn, ""),
        "sll_buy_dvsn_cd": o.side_code, "sll_buy_dvsn_cd_name": "현금매수" if o.side == "buy" else "현금매도",
        "pdno": o.code, "prdt_name": inst.name if inst else "", "ord_qty": str(o.qty), "ord_unpr": str(o.price),
        "ord_tmd": o.ord_tmd, "tot_ccld_qty": str(o.filled_qty), "avg_prvs": str(avg),
        "cncl_yn": "Y" if o.kind == "cancel" else "N", "tot_ccld_amt": str(o.filled_value_won), "loan_dt": "",
        "ordr_empno": "", "ord_dvsn_cd": o.ord_dvsn,
        "cnc_cfrm_qty": str(o.canceled_qty if o.kind == "cancel" else 0),
        "rmn_qty": str(o.remaining_qty), "rjct_qty": str(o.rejected_qty),
        "ccld_cndt_name": {"0": "없음", "1": "IOC", "2": "FOK"}.get(o.condition, "없음"),
        "inqr_ip_addr": "", "cpbc_ordp_ord_rcit_dvsn_cd": "", "cpbc_ordp_infm_mthd_dvsn_cd": "", "infm_tmd": "",
        "ctac_tlno": "", "prdt_type_cd": "300", "excg_dvsn_cd": "01", "cpbc_ordp_mtrl_dvsn_cd": "",
        "ord_orgno": desk.flavour.branch, "rsvn_ord_end_dt": "", "excg_id_dvsn_cd": o.exchange,
        "stpm_cndt_pric": "0", "stpm_efct_occr_dtmd": "",
    }
    if spellings:  # the workbook example's spellings, for clients that read those
        row["cncl_cfrm_qty"] = row["cnc_cfrm_qty"]
        row["excg_id_dvsn_Cd"] = row["excg_id_dvsn_cd"]
    return row


def daily_ccld(q: Query, tr_cont_in: str, desk: OrderDesk, market: KisMarket, *, spellings: bool = False) -> Answer:
    """``inquire-daily-ccld``: the orders of a date range with their fills, paged."""
    _account(q, desk)
    start, end = _field(q, "INQR_STRT_DT"), _field(q, "INQR_END_DT")
    if not (len(start) == len(end) == 8 and start.isdigit() and end.isdigit()):
        raise KisError("OPSQ2002", 200, "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH (INQR_STRT_DT/INQR_END_DT)")
    side = _field(q, "SLL_BUY_DVSN_CD", allowed=("00", "01", "02"))
    ccld = _field(q, "CCLD_DVSN", allowed=("00", "01", "02"))
    order = _field(q, "INQR_DVSN", allowed=("00", "01"))
    _field(q, "INQR_DVSN_3", required=False)
    exchange = _field(q, "EXCG_ID_DVSN_CD", required=False)
    allowed_exchanges = ("", "KRX") if desk.flavour.is_demo else ("", "KRX", "NXT", "SOR", "ALL")
    if exchange not in allowed_exchanges:
        raise KisError("90000000", 200) if desk.flavour.is_demo else KisError("OPSQ2002", 200)
    code, odno = q.get("PDNO", "").strip(), q.get("ODNO", "").strip()
    rows = []
    for o in sorted(desk.orders_between(start, end), key=lambda o: o.odno, reverse=order == "00"):
        if side != "00" and o.side_code != side or code and o.code != code:
            continue
        if odno and o.odno.lstrip("0") != odno.lstrip("0"):
            continue
        if ccld == "01" and not o.filled_qty or ccld == "02" and not o.remaining_qty:
            continue
        rows.append(o)
    prefix = f"{desk.cano}^{desk.product_code}^"
    fk = f"{desk.cano}^{desk.product_code}^{start}^{end}^{side}^{ccld}^{order}^"
    page, tr_cont, fk100, nk100 = _page(rows, lambda o: o.odno, q, tr_cont_in, desk.flavour.daily_ccld_page,
                                        fk, prefix)
    qty = sum(o.qty for o in rows if o.kind != "cancel")
    filled = sum(o.filled_qty for o in rows)
    amount = sum(o.filled_value_won for o in rows)
    summary = {"tot_ord_qty": str(qty), "tot_ccld_qty": str(filled), "tot_ccld_amt": str(amount),
               "prsm_tlex_smtl": str(sum(o.costs_won for o in rows)),
               "pchs_avg_pric": f"{amount / filled:.4f}" if filled else "0.0000"}
    body = ok("KIOK0510", padded=True, ctx_area_fk100=fk100, ctx_area_nk100=nk100,
              output1=[_ccld_row(o, desk, market, spellings) for o in page], output2=summary)
    return body, tr_cont


# --- inquire-balance ----------------------------------------------------------------------


def balance(q: Query, tr_cont_in: str, desk: OrderDesk, market: KisMarket) -> Answer:
    """``inquire-balance``: one row per stock and trade type (cash only here), zero rows until D+2, paged."""
    _account(q, desk)
    _field(q, "AFHR_FLPR_YN", allowed=("N", "Y", "X"))
    _field(q, "INQR_DVSN", allowed=("01", "02"))
    _field(q, "UNPR_DVSN", allowed=("01",))
    _field(q, "FUND_STTL_ICLD_YN", allowed=("N", "Y"))
    _field(q, "FNCG_AMT_AUTO_RDPT_YN", allowed=("N", "Y"))
    _field(q, "PRCS_DVSN", allowed=("00", "01"))
    today = market.trading_date
    engine = desk.engine
    held = engine.positions(ACCOUNT_ID)
    past = sorted({o.ord_dt for o in desk.orders.values() if o.ord_dt < today})
    yesterday = past[-1] if past else ""
    codes = sorted(set(held) | {c for c, d in desk.sold_out.items() if _days_since(d, today, past) < 2})

    def traded(code: str, date: str, side: str) -> tuple[int, int]:
        qty = val = 0
        for o in desk.orders.values():
            if o.code == code and o.ord_dt == date and o.side == side and o.kind != "cancel":
                qty += o.filled_qty
                val += o.filled_value_won
        return qty, val

    rows = []
    for code in codes:
        p = held.get(code)
        cd = market.days[code]
        qty = p.qty if p else 0
        cost = p.book_cost_won if p else 0
        price = cd.price
        value = qty * price
        pnl = value - cost
        rows.append({
            "pdno": code, "prdt_name": desk.instruments[code].name, "trad_dvsn_name": "현금",
            "bfdy_buy_qty": str(traded(code, yesterday, "buy")[0]), "bfdy_sll_qty": str(traded(code, yesterday, "sell")[0]),
            "thdt_buyqty": str(traded(code, today, "buy")[0]), "thdt_sll_qty": str(traded(code, today, "sell")[0]),
            "hldg_qty": str(qty), "ord_psbl_qty": str(p.sellable_qty if p else 0),
            "pchs_avg_pric": f"{cost / qty:.4f}" if qty else "0.0000", "pchs_amt": str(cost), "prpr": str(price),
            "evlu_amt": str(value), "evlu_pfls_amt": str(pnl), "evlu_pfls_rt": _pct(pnl, cost),
            "evlu_erng_rt": f"{pnl * 100 / cost:.8f}" if cost else "0.00000000", "loan_dt": "", "loan_amt": "0",
            "stln_slng_chgs": "0", "expd_dt": "", "fltt_rt": _pct(price - cd.base, cd.base),
            "bfdy_cprs_icdc": str(price - cd.base), "item_mgna_rt_name": "20%", "grta_rt_name": "",
            "sbst_pric": str(price * 7 // 10), "stck_loan_unpr": "0",
        })
    prefix = f"{desk.cano}^{desk.product_code}^"
    page, tr_cont, fk100, nk100 = _page(rows, lambda r: r["pdno"], q, tr_cont_in, desk.flavour.balance_page,
                                        prefix, prefix)
    account = engine.account(ACCOUNT_ID)
    assert account is not None
    buys = [traded(c, today, "buy")[1] for c in desk.instruments]
    sells = [traded(c, today, "sell")[1] for c in desk.instruments]
    costs_today = sum(o.costs_won for o in desk.orders.values() if o.ord_dt == today)
    thdt_buy, thdt_sell = sum(buys), sum(sells)
    cost_total = sum(p.book_cost_won for p in held.values())
    value_total = sum(p.qty * market.days[c].price for c, p in held.items())
    deposit = account.cash_won + thdt_buy - thdt_sell + costs_today  # today's trades settle on D+2
    summary = {
        "dnca_tot_amt": str(deposit), "nxdy_excc_amt": str(account.cash_won), "prvs_rcdl_excc_amt": str(account.cash_won),
        "cma_evlu_amt": "0", "bfdy_buy_amt": "0", "thdt_buy_amt": str(thdt_buy), "nxdy_auto_rdpt_amt": "0",
        "bfdy_sll_amt": "0", "thdt_sll_amt": str(thdt_sell), "d2_auto_rdpt_amt": "0", "bfdy_tlex_amt": "0",
        "thdt_tlex_amt": str(costs_today), "tot_loan_amt": "0", "scts_evlu_amt": str(value_total),
        "tot_evlu_amt": str(account.cash_won + value_total), "nass_amt": str(account.cash_won + value_total),
        "fncg_gld_auto_rdpt_yn": "N", "pchs_amt_smtl_amt": str(cost_total), "evlu_amt_smtl_amt": str(value_total),
        "evlu_pfls_smtl_amt": str(value_total - cost_total), "tot_stln_slng_chgs": "0",
        "bfdy_tot_asst_evlu_amt": str(account.cash_won + value_total), "asst_icdc_amt": "0",
        "asst_icdc_erng_rt": "0.00000000",
    }
    body = ok("KIOK0510", padded=True, ctx_area_fk100=fk100, ctx_area_nk100=nk100, output1=page, output2=[summary])
    return body, tr_cont


def _days_since(date: str, today: str, past_dates: list[str]) -> int:
    """Trading days from ``date`` to ``today`` (counted by the days the desk has seen orders, at least by calendar)."""
    if date >= today:
        return 0
    d0 = dt.datetime.strptime(date, "%Y%m%d").date()
    d1 = dt.datetime.strptime(today, "%Y%m%d").date()
    return int((d1 - d0).days) if (d1 - d0).days < 2 else 2


# --- inquire-psbl-order -------------------------------------------------------------------


def psbl_order(q: Query, desk: OrderDesk, market: KisMarket) -> Answer:
    """``inquire-psbl-order``: cash and the largest buy at a price (commission included)."""
    _account(q, desk)
    code = _field(q, "PDNO").strip()
    unpr = _field(q, "ORD_UNPR", required=False).strip()
    _field(q, "ORD_DVSN")
    if unpr and not unpr.isdigit():
        raise KisError("OPSQ2002", 200, "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH (ORD_UNPR)")
    account = desk.engine.account(ACCOUNT_ID)
    assert account is not None
    price = int(unpr or 0) or (market.days[code].price if code in market.days else 0)
    costs = desk.engine.costs
    per_share = price + -(-price * costs.commission_num // costs.commission_den) if price else 0
    power = account.buying_power_won
    max_qty = power // per_share if per_share else 0
    output = {
        "ord_psbl_cash": str(power), "ord_psbl_sbst": "0", "ruse_psbl_amt": "0", "fund_rpch_chgs": "0",
        "psbl_qty_calc_unpr": str(price), "nrcvb_buy_amt": str(power), "nrcvb_buy_qty": str(max_qty),
        "max_buy_amt": str(max_qty * price), "max_buy_qty": str(max_qty), "cma_evlu_amt": "0",
        "ovrs_re_use_amt_wcrc": "0", "ord_psbl_frcr_amt_wcrc": "0",
    }
    return ok("KIOK0420", padded=True, output=output), ""


# --- inquire-psbl-rvsecncl (real only) ----------------------------------------------------------


def psbl_rvsecncl(q: Query, tr_cont_in: str, desk: OrderDesk, market: KisMarket) -> Answer:
    """``inquire-psbl-rvsecncl``: today's orders that can still be revised or cancelled, paged by 50."""
    _account(q, desk)
    _field(q, "INQR_DVSN_1", allowed=("0", "1", "2"))
    side = _field(q, "INQR_DVSN_2", allowed=("0", "1", "2"))
    rows = [o for o in desk.open_orders() if side == "0" or o.side_code == ("01" if side == "1" else "02")]
    rows.sort(key=lambda o: (o.code, o.odno) if q.get("INQR_DVSN_1") in ("1", "2") else (o.odno,))
    prefix = f"{desk.cano}^{desk.product_code}^"
    page, tr_cont, fk100, nk100 = _page(rows, lambda o: o.odno, q, tr_cont_in, desk.flavour.psbl_rvsecncl_page,
                                        prefix, prefix)
    out = [{
        "ord_gno_brno": desk.flavour.branch, "odno": o.odno, "orgn_odno": o.orgn_odno,
        "ord_dvsn_name": DVSN_NAMES.get(o.ord_dvsn, o.ord_dvsn), "pdno": o.code,
        "prdt_name": desk.instruments[o.code].name, "rvse_cncl_dvsn_name": "정정" if o.kind == "revise" else "",
        "ord_qty": str(o.qty), "ord_unpr": str(o.price), "ord_tmd": o.ord_tmd, "tot_ccld_qty": str(o.filled_qty),
        "tot_ccld_amt": str(o.filled_value_won), "psbl_qty": str(o.remaining_qty), "sll_buy_dvsn_cd": o.side_code,
        "ord_dvsn_cd": o.ord_dvsn, "mgco_aptm_odno": "", "excg_dvsn_cd": "01", "excg_id_dvsn_cd": o.exchange,
        "excg_id_dvsn_name": o.exchange, "stpm_cndt_pric": "0", "stpm_efct_occr_yn": "N",
    } for o in page]
    return ok("KIOK0420", padded=True, ctx_area_fk100=fk100, ctx_area_nk100=nk100, output=out), tr_cont


# --- quotations ----------------------------------------------------------------------------------


def _stock(q: Query, market: KisMarket) -> str:
    div = _field(q, "FID_COND_MRKT_DIV_CODE")
    if div not in MARKET_CODES:
        raise KisError("OPSQ2001", 200)
    code = _field(q, "FID_INPUT_ISCD").strip()
    if code not in market.days:
        raise KisError("OPSQ2002", 200, "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH (FID_INPUT_ISCD)")
    return code


def price(q: Query, market: KisMarket) -> Answer:
    """``inquire-price``: the 82-field current-price object (PER, EPS, BPS, limits, tick...)."""
    code = _stock(q, market)
    cd = market.days[code]
    inst = market.instruments[code]
    day = market.venue.day
    k = day.codes.index(code) if day is not None else -1
    eps = int(day.eps[k]) if day is not None else inst.eps
    bps = int(day.bps[k]) if day is not None else inst.bps
    p = cd.price
    avg = cd.value_won / cd.volume if cd.volume else float(p)
    cap_100m = p * inst.shares_outstanding // 100_000_000
    empty = ""
    out = {
        "iscd_stat_cls_code": "55", "marg_rate": "20.00", "rprs_mrkt_kor_name": inst.market,
        "new_hgpr_lwpr_cls_code": empty, "bstp_kor_isnm": inst.sector, "temp_stop_yn": "N",
        "oprc_rang_cont_yn": "N", "clpr_rang_cont_yn": "N", "crdt_able_yn": "Y", "grmn_rate_cls_code": "40",
        "elw_pblc_yn": "N", "stck_prpr": str(p), "prdy_vrss": str(p - cd.base), "prdy_vrss_sign": cd.sign(),
        "prdy_ctrt": _pct(p - cd.base, cd.base), "acml_tr_pbmn": str(cd.value_won), "acml_vol": str(cd.volume),
        "prdy_vrss_vol_rate": _pct(cd.volume, cd.prev_volume), "stck_oprc": str(cd.open or p),
        "stck_hgpr": str(cd.high or p), "stck_lwpr": str(cd.low or p), "stck_mxpr": str(cd.upper),
        "stck_llam": str(cd.lower), "stck_sdpr": str(cd.base), "wghn_avrg_stck_prc": f"{avg:.2f}",
        "hts_frgn_ehrt": "50.00", "frgn_ntby_qty": "0", "pgtr_ntby_qty": "0",
        "pvt_scnd_dmrs_prc": str(cd.base), "pvt_frst_dmrs_prc": str(cd.base), "pvt_pont_val": str(cd.base),
        "pvt_frst_dmsp_prc": str(cd.base), "pvt_scnd_dmsp_prc": str(cd.base), "dmrs_val": str(cd.base),
        "dmsp_val": str(cd.base), "cpfn": "0", "rstc_wdth_prc": str(cd.upper - cd.base), "stck_fcam": "100",
        "stck_sspr": str(p * 7 // 10), "aspr_unit": str(tick_size(p)), "hts_deal_qty_unit_val": "1",
        "lstn_stcn": str(inst.shares_outstanding), "hts_avls": str(cap_100m),
        "per": f"{p / eps:.2f}" if eps > 0 else "0.00", "pbr": f"{p / bps:.2f}" if bps > 0 else "0.00",
        "stac_month": "12", "vol_tnrt": _pct(cd.volume, inst.shares_outstanding), "eps": f"{eps:.2f}",
        "bps": f"{bps:.2f}", "d250_hgpr": str(max(cd.high, cd.base)), "d250_hgpr_date": market.trading_date,
        "d250_hgpr_vrss_prpr_rate": "0.00", "d250_lwpr": str(min(cd.low or p, cd.base)),
        "d250_lwpr_date": market.trading_date, "d250_lwpr_vrss_prpr_rate": "0.00",
        "stck_dryy_hgpr": str(max(cd.high, cd.base)), "dryy_hgpr_vrss_prpr_rate": "0.00",
        "dryy_hgpr_date": market.trading_date, "stck_dryy_lwpr": str(min(cd.low or p, cd.base)),
        "dryy_lwpr_vrss_prpr_rate": "0.00", "dryy_lwpr_date": market.trading_date,
        "w52_hgpr": str(max(cd.high, cd.base)), "w52_hgpr_vrss_prpr_ctrt": "0.00",
        "w52_hgpr_date": market.trading_date, "w52_lwpr": str(min(cd.low or p, cd.base)),
        "w52_lwpr_vrss_prpr_ctrt": "0.00", "w52_lwpr_date": market.trading_date, "whol_loan_rmnd_rate": "0.00",
        "ssts_yn": "Y", "stck_shrn_iscd": code, "fcam_cnnm": "100", "cpfn_cnnm": "0", "apprch_rate": "0.00",
        "frgn_hldn_qty": "0", "vi_cls_code": "N", "ovtm_vi_cls_code": "N", "last_ssts_cntg_qty": "0",
        "invt_caful_yn": "N", "mrkt_warn_cls_code": "00", "short_over_yn": "N", "sltr_yn": "N",
        "mang_issu_cls_code": "N",
    }
    return ok("MCA00000", output=out), ""


def investor(q: Query, market: KisMarket) -> Answer:
    """``inquire-investor``: daily investor flows, newest first; today's row only after the close."""
    code = _stock(q, market)
    rows = list(market.flow_history.get(code, []))
    today = market.todays_flow(code)
    if today is not None:
        rows.insert(0, today)
    out = []
    for date, close, change, sign, foreign, institution, volume, value in rows[:INVESTOR_ROWS]:
        person = -(foreign + institution)
        avg = value // volume if volume else close
        # gross buys and sells around the nets: a third of the day's volume each way per group
        gross = volume // 3
        groups = {"prsn": person, "frgn": foreign, "orgn": institution}
        row = {"stck_bsop_date": date, "stck_clpr": str(close), "prdy_vrss": str(change), "prdy_vrss_sign": sign}
        for g, net in groups.items():
            row[f"{g}_ntby_qty"] = str(net)
        for g, net in groups.items():
            row[f"{g}_ntby_tr_pbmn"] = str(net * avg // 1_000_000)  # millions of won (UNCONFIRMED unit)
        for g, net in groups.items():
            row[f"{g}_shnu_vol"] = str(gross + max(net, 0))
        for g, net in groups.items():
            row[f"{g}_shnu_tr_pbmn"] = str((gross + max(net, 0)) * avg // 1_000_000)
        for g, net in groups.items():
            row[f"{g}_seln_vol"] = str(gross + max(-net, 0))
        for g, net in groups.items():
            row[f"{g}_seln_tr_pbmn"] = str((gross + max(-net, 0)) * avg // 1_000_000)
        out.append(row)
    return ok("MCA00000", output=out), ""


def minute_chart(q: Query, market: KisMarket) -> Answer:
    """``inquire-time-itemchartprice``: today's 1-minute bars at or before FID_INPUT_HOUR_1, 30 at most, newest first."""
    code = _stock(q, market)
    hour = _field(q, "FID_INPUT_HOUR_1").strip()
    _field(q, "FID_ETC_CLS_CODE", required=False)
    _field(q, "FID_PW_DATA_INCU_YN", required=False)
    if len(hour) != 6 or not hour.isdigit():
        raise KisError("OPSQ2002", 200, "ERROR : INPUT INVALID_CHECK_FIELD_LENGTH (FID_INPUT_HOUR_1)")
    cd = market.days[code]
    date = market.trading_date
    rows = []
    for minute, o, h, lo, c, vol, value in reversed(cd.bars):
        hms = hhmmss(minute)
        if hms > hour:
            continue
        rows.append({"stck_bsop_date": date, "stck_cntg_hour": hms, "stck_prpr": str(c), "stck_oprc": str(o),
                     "stck_hgpr": str(h), "stck_lwpr": str(lo), "cntg_vol": str(vol), "acml_tr_pbmn": str(value)})
        if len(rows) == MINUTE_ROWS:
            break
    head = {"prdy_vrss": str(cd.price - cd.base), "prdy_vrss_sign": cd.sign(),
            "prdy_ctrt": _pct(cd.price - cd.base, cd.base), "stck_prdy_clpr": str(cd.base),
            "acml_vol": str(cd.volume), "acml_tr_pbmn": str(cd.value_won),
            "hts_kor_isnm": market.instruments[code].name, "stck_prpr": str(cd.price)}
    return ok("MCA00000", "정상처리 되었습니다!", output1=head, output2=rows), ""

