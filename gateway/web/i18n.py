"""The words of the kiosk and the staff console in Chinese and English.

One table, so a missing translation shows in tests.  `{name}` fields are filled with
`str.format`; the console's script gets the words it needs from the page.
"""

from __future__ import annotations

from gateway.web.settings import Lang

__all__ = ["CONSOLE_JS_KEYS", "TEXT", "t", "t_or"]

TEXT: dict[str, dict[Lang, str]] = {
    "title": {Lang.ZH: "社区服务", Lang.EN: "Community service"},
    "choose": {Lang.ZH: "请选择您需要的服务", Lang.EN: "What do you need?"},
    "repair": {Lang.ZH: "报修", Lang.EN: "Repair"},
    "cleaning": {Lang.ZH: "清洁", Lang.EN: "Cleaning"},
    "assistance": {Lang.ZH: "老人/残障协助", Lang.EN: "Help for elderly or disabled"},
    "feedback": {Lang.ZH: "投诉与建议", Lang.EN: "Complaint or suggestion"},
    "check": {Lang.ZH: "查询我的请求", Lang.EN: "Check my request"},
    "other_lang": {Lang.ZH: "English", Lang.EN: "中文"},
    "flat": {Lang.ZH: "房号(可不填)", Lang.EN: "Flat number (optional)"},
    "phone": {Lang.ZH: "电话(可不填)", Lang.EN: "Phone (optional)"},
    "text": {Lang.ZH: "简单说明(可不填)", Lang.EN: "A few words (optional)"},
    "send": {Lang.ZH: "提交", Lang.EN: "Send"},
    "back": {Lang.ZH: "返回", Lang.EN: "Back"},
    "home": {Lang.ZH: "回到首页", Lang.EN: "Start again"},
    "your_code": {Lang.ZH: "您的请求编号", Lang.EN: "Your request code"},
    "keep_code": {
        Lang.ZH: "请记下或拍下这个编号,用它查询处理进度。",
        Lang.EN: "Write this code down or take a photo; use it to check progress.",
    },
    "enter_code": {Lang.ZH: "请输入请求编号", Lang.EN: "Enter your request code"},
    "show": {Lang.ZH: "查询", Lang.EN: "Show"},
    "delete": {Lang.ZH: "删除", Lang.EN: "Delete"},
    "no_such_code": {
        Lang.ZH: "没有找到这个编号,请检查后再试。",
        Lang.EN: "No request has this code. Please check it and try again.",
    },
    "status": {Lang.ZH: "处理进度", Lang.EN: "Progress"},
    "filed": {Lang.ZH: "已提交", Lang.EN: "Sent"},
    "received": {Lang.ZH: "物业已收到", Lang.EN: "Received by the office"},
    "assigned": {Lang.ZH: "已安排人员", Lang.EN: "Someone is assigned"},
    "done": {Lang.ZH: "已完成", Lang.EN: "Done"},
    "too_many": {
        Lang.ZH: "这台终端刚提交了很多请求,请稍后再试,紧急情况请直接致电物业。",
        Lang.EN: "This kiosk has sent many requests just now. Please try again later, "
        "or call the office if it is urgent.",
    },
    "bad_input": {Lang.ZH: "输入有误", Lang.EN: "Please check"},
    "alarm_fire": {Lang.ZH: "火警", Lang.EN: "FIRE ALARM"},
    "building": {Lang.ZH: "楼", Lang.EN: "Building"},
    "floor": {Lang.ZH: "层", Lang.EN: "floor"},
    "alarm_advice": {
        Lang.ZH: "请听从工作人员指挥,不要乘坐电梯。",
        Lang.EN: "Follow staff instructions. Do not use the lifts.",
    },
    "expired": {
        Lang.ZH: "页面已过期,请重新提交。",
        Lang.EN: "This page expired. Please send it again.",
    },
    # ---- times (console and kiosk) ----
    "ago_now": {Lang.ZH: "刚刚", Lang.EN: "just now"},
    "ago_s": {Lang.ZH: "{n} 秒前", Lang.EN: "{n} s ago"},
    "ago_min": {Lang.ZH: "{n} 分钟前", Lang.EN: "{n} min ago"},
    "ago_h": {Lang.ZH: "{n} 小时前", Lang.EN: "{n} h ago"},
    "ago_d": {Lang.ZH: "{n} 天前", Lang.EN: "{n} d ago"},
    "times_in": {Lang.ZH: "时间为 {zone} 时区", Lang.EN: "Times in {zone}"},
    # ---- staff console ----
    "c_signin_title": {Lang.ZH: "员工登录", Lang.EN: "Staff sign in"},
    "c_staff_id": {Lang.ZH: "工号", Lang.EN: "Staff id"},
    "c_secret": {Lang.ZH: "PIN 或密码", Lang.EN: "PIN or password"},
    "c_signin": {Lang.ZH: "登录", Lang.EN: "Sign in"},
    "c_wrong": {Lang.ZH: "工号或 PIN 错误。", Lang.EN: "Wrong staff id or PIN."},
    "c_locked": {
        Lang.ZH: "失败次数过多,请 {n} 秒后再试。",
        Lang.EN: "Too many failed attempts. Try again in {n} s.",
    },
    "c_title": {Lang.ZH: "楼宇值班台", Lang.EN: "Building console"},
    "c_connecting": {Lang.ZH: "连接中…", Lang.EN: "connecting…"},
    "c_live": {Lang.ZH: "实时", Lang.EN: "live"},
    "c_reconnecting": {Lang.ZH: "重新连接中…", Lang.EN: "reconnecting…"},
    "c_signed_in_as": {Lang.ZH: "当前用户:{name}", Lang.EN: "Signed in as {name}"},
    "c_signout": {Lang.ZH: "退出", Lang.EN: "Sign out"},
    "c_no_engine": {Lang.ZH: "报警引擎未运行。", Lang.EN: "The alarm engine is not running."},
    "c_alarms": {Lang.ZH: "报警", Lang.EN: "Alarms"},
    "c_type": {Lang.ZH: "类型", Lang.EN: "Type"},
    "c_severity": {Lang.ZH: "级别", Lang.EN: "Severity"},
    "c_state": {Lang.ZH: "状态", Lang.EN: "State"},
    "c_device_place": {Lang.ZH: "设备 / 位置", Lang.EN: "Device / location"},
    "c_since": {Lang.ZH: "开始时间", Lang.EN: "Since"},
    "c_escalation": {Lang.ZH: "升级", Lang.EN: "Escalation"},
    "c_acked": {Lang.ZH: "确认人", Lang.EN: "Acknowledged"},
    "c_devices": {Lang.ZH: "设备", Lang.EN: "Devices"},
    "c_device": {Lang.ZH: "设备", Lang.EN: "Device"},
    "c_kind": {Lang.ZH: "种类", Lang.EN: "Kind"},
    "c_location": {Lang.ZH: "位置", Lang.EN: "Location"},
    "c_availability": {Lang.ZH: "在线状态", Lang.EN: "Availability"},
    "c_last_value": {Lang.ZH: "最新数值", Lang.EN: "Last value"},
    "c_at": {Lang.ZH: "时间", Lang.EN: "At"},
    "c_note": {Lang.ZH: "备注", Lang.EN: "note"},
    "c_ack": {Lang.ZH: "确认", Lang.EN: "Acknowledge"},
    "c_not_acked": {Lang.ZH: "未能确认", Lang.EN: "Not acknowledged"},
    "c_ok": {Lang.ZH: "好", Lang.EN: "OK"},
    "c_bldg": {Lang.ZH: "{v}号楼", Lang.EN: "Bldg {v}"},
    "c_floor": {Lang.ZH: "{v}层", Lang.EN: "fl. {v}"},
    "type_fire": {Lang.ZH: "火警", Lang.EN: "fire"},
    "type_care": {Lang.ZH: "照护", Lang.EN: "care"},
    "type_wellness": {Lang.ZH: "健康", Lang.EN: "wellness"},
    "type_security": {Lang.ZH: "安防", Lang.EN: "security"},
    "type_maintenance": {Lang.ZH: "维护", Lang.EN: "maintenance"},
    "sev_critical": {Lang.ZH: "危急", Lang.EN: "critical"},
    "sev_high": {Lang.ZH: "高", Lang.EN: "high"},
    "sev_medium": {Lang.ZH: "中", Lang.EN: "medium"},
    "sev_low": {Lang.ZH: "低", Lang.EN: "low"},
    "state_active": {Lang.ZH: "报警中", Lang.EN: "active"},
    "state_acknowledged": {Lang.ZH: "已确认", Lang.EN: "acknowledged"},
    "state_cleared": {Lang.ZH: "已恢复", Lang.EN: "cleared"},
    "state_closed": {Lang.ZH: "已关闭", Lang.EN: "closed"},
    "avail_online": {Lang.ZH: "在线", Lang.EN: "online"},
    "avail_offline": {Lang.ZH: "离线", Lang.EN: "offline"},
    "avail_unknown": {Lang.ZH: "未知", Lang.EN: "unknown"},
}

# The words the console's script needs to build rows and ages like the server does.
CONSOLE_JS_KEYS = (
    "ago_now",
    "ago_s",
    "ago_min",
    "ago_h",
    "ago_d",
    "c_live",
    "c_reconnecting",
    "c_note",
    "c_ack",
    "c_not_acked",
    "c_bldg",
    "c_floor",
    *(k for k in TEXT if k.startswith(("type_", "sev_", "state_", "avail_"))),
)


def t(key: str, lang: Lang) -> str:
    """The text `key` in `lang`."""
    return TEXT[key][lang]


def t_or(key: str, lang: Lang, fallback: str) -> str:
    """The text `key` in `lang`, or `fallback` (a value the table does not know, as is)."""
    entry = TEXT.get(key)
    return entry[lang] if entry is not None else fallback
