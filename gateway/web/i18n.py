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
    "assistance": {Lang.ZH: "老人或残障人士协助", Lang.EN: "Help for elderly or disabled"},
    "feedback": {Lang.ZH: "投诉与建议", Lang.EN: "Complaint or suggestion"},
    "check": {Lang.ZH: "查询我的请求", Lang.EN: "Check my request"},
    "other_lang": {Lang.ZH: "English", Lang.EN: "中文"},
    "flat": {Lang.ZH: "房号（可不填）", Lang.EN: "Flat number (optional)"},
    "phone": {Lang.ZH: "电话（可不填）", Lang.EN: "Phone (optional)"},
    "text": {Lang.ZH: "简单说明（可不填）", Lang.EN: "A few words (optional)"},
    "send": {Lang.ZH: "提交", Lang.EN: "Send"},
    "back": {Lang.ZH: "返回", Lang.EN: "Back"},
    "home": {Lang.ZH: "回到首页", Lang.EN: "Start again"},
    "your_code": {Lang.ZH: "您的请求编号", Lang.EN: "Your request code"},
    "keep_code": {
        Lang.ZH: "请记下或拍下这个编号，用它查询处理进度。",
        Lang.EN: "Write this code down or take a photo; use it to check progress.",
    },
    "enter_code": {Lang.ZH: "请输入请求编号", Lang.EN: "Enter your request code"},
    "show": {Lang.ZH: "查询", Lang.EN: "Show"},
    "another_code": {Lang.ZH: "查询其他编号", Lang.EN: "Check another code"},
    "delete": {Lang.ZH: "删除", Lang.EN: "Delete"},
    "no_such_code": {
        Lang.ZH: "没有找到这个编号，请检查后再试。",
        Lang.EN: "No request has this code. Please check it and try again.",
    },
    "status": {Lang.ZH: "处理进度", Lang.EN: "Progress"},
    "filed": {Lang.ZH: "已提交", Lang.EN: "Sent"},
    "received": {Lang.ZH: "物业已收到", Lang.EN: "Received by the office"},
    "assigned": {Lang.ZH: "已安排人员", Lang.EN: "Someone is assigned"},
    "done": {Lang.ZH: "已完成", Lang.EN: "Done"},
    "too_many": {
        Lang.ZH: "这台终端刚提交了很多请求，请稍后再试。紧急情况请直接致电物业。",
        Lang.EN: "This kiosk has sent many requests just now. Please try again later, "
        "or call the office if it is urgent.",
    },
    "call_office": {Lang.ZH: "请致电物业：{phone}", Lang.EN: "Please call the office: {phone}."},
    "too_many_codes": {
        Lang.ZH: "这台终端查询了太多不存在的编号，请稍后再试。",
        Lang.EN: "Too many unknown codes were tried here. Please try again later.",
    },
    "bad_input": {Lang.ZH: "输入有误", Lang.EN: "Please check"},
    "alarm_fire": {Lang.ZH: "火警", Lang.EN: "FIRE ALARM"},
    "building": {Lang.ZH: "{v}号楼", Lang.EN: "Building {v}"},
    "floor": {Lang.ZH: "{v}层", Lang.EN: "floor {v}"},
    "alarm_advice": {
        Lang.ZH: "请听从工作人员指挥，不要乘坐电梯。",
        Lang.EN: "Follow staff instructions. Do not use the lifts.",
    },
    "expired": {
        Lang.ZH: "页面已过期，请重新提交。",
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
        Lang.ZH: "失败次数过多，请 {n} 秒后再试。",
        Lang.EN: "Too many failed attempts. Try again in {n} s.",
    },
    "c_title": {Lang.ZH: "楼宇值班台", Lang.EN: "Building console"},
    "c_connecting": {Lang.ZH: "连接中…", Lang.EN: "connecting…"},
    "c_live": {Lang.ZH: "实时", Lang.EN: "live"},
    "c_reconnecting": {Lang.ZH: "重新连接中…", Lang.EN: "reconnecting…"},
    "c_signed_in_as": {Lang.ZH: "当前用户：{name}", Lang.EN: "Signed in as {name}"},
    "c_signout": {Lang.ZH: "退出", Lang.EN: "Sign out"},
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
    # ---- kiosk: time-out and live progress ----
    "k_timeout": {
        Lang.ZH: "没有操作，{n} 秒后回到首页。",
        Lang.EN: "Nothing touched for a while: back to the start in {n} s.",
    },
    "k_more_time": {Lang.ZH: "我还需要时间", Lang.EN: "I need more time"},
    "banner_sep": {Lang.ZH: "：", Lang.EN: ": "},
    # ---- console: a page that lost its stream, acknowledgement errors ----
    "c_stale": {Lang.ZH: "未连接：本页已停止更新", Lang.EN: "NOT LIVE: this page is not updating"},
    "c_stale_since": {
        Lang.ZH: "最后一次更新：{ago}。之后的新报警不会显示在这里。",
        Lang.EN: "Last update: {ago}. Alarms raised since then are not shown here.",
    },
    "c_stale_retry": {Lang.ZH: "正在重新连接…", Lang.EN: "Reconnecting…"},
    "c_session_ended": {
        Lang.ZH: "登录已失效，请重新登录。",
        Lang.EN: "Your session has ended. Please sign in again.",
    },
    "c_signin_again": {Lang.ZH: "重新登录", Lang.EN: "Sign in again"},
    "c_ack_expired": {
        Lang.ZH: "页面已过期，请刷新后再确认。",
        Lang.EN: "This page has expired. Reload it and acknowledge again.",
    },
    "c_ack_gone": {Lang.ZH: "没有这条报警。", Lang.EN: "This alarm no longer exists."},
    "c_ack_failed": {
        Lang.ZH: "未能确认（错误 {n}），请再试一次。",
        Lang.EN: "Not acknowledged (error {n}). Please try again.",
    },
    "c_ack_offline": {
        Lang.ZH: "未能连接网关，请检查网络后再试。",
        Lang.EN: "The gateway did not answer. Check the network and try again.",
    },
    "c_no_alarms": {Lang.ZH: "目前没有报警。", Lang.EN: "No alarms."},
    "c_cause": {Lang.ZH: "原因", Lang.EN: "Cause"},
    "c_alerts_on": {Lang.ZH: "开启声音和通知", Lang.EN: "Turn on sound and notifications"},
    "c_alerts_active": {Lang.ZH: "声音提醒已开启", Lang.EN: "Sound on"},
    "c_new_alarm": {Lang.ZH: "新报警", Lang.EN: "New alarm"},
    "c_escalated": {Lang.ZH: "报警升级", Lang.EN: "Alarm escalated"},
    "c_escalation_n": {Lang.ZH: "已升级 {n} 次", Lang.EN: "escalated {n}×"},
    # ---- console: building view ----
    "c_buildings": {Lang.ZH: "楼宇", Lang.EN: "Buildings"},
    "c_place_alarm": {Lang.ZH: "报警", Lang.EN: "alarm"},
    "c_place_offline": {Lang.ZH: "离线", Lang.EN: "offline"},
    "c_place_acknowledged": {Lang.ZH: "已确认", Lang.EN: "acknowledged"},
    "c_place_fine": {Lang.ZH: "正常", Lang.EN: "fine"},
    "c_last_24h": {Lang.ZH: "最近 24 小时用量", Lang.EN: "Use in the last 24 hours"},
    "c_no_history": {Lang.ZH: "还没有读数。", Lang.EN: "No readings yet."},
    "c_unchanged": {Lang.ZH: "{h} 小时没有变化", Lang.EN: "no change for {h} h"},
    "c_total_24h": {Lang.ZH: "24 小时共 {v}", Lang.EN: "{v} in 24 h"},
    "c_back": {Lang.ZH: "返回值班台", Lang.EN: "Back to the console"},
    "c_no_place": {Lang.ZH: "没有这个位置的设备。", Lang.EN: "No device is at this place."},
    # ---- device kinds, reading names and event types ----
    "kind_door": {Lang.ZH: "门禁", Lang.EN: "door"},
    "kind_smoke": {Lang.ZH: "烟感", Lang.EN: "smoke detector"},
    "kind_meter": {Lang.ZH: "仪表", Lang.EN: "meter"},
    "kind_elderly_alarm": {Lang.ZH: "老人报警器", Lang.EN: "care alarm"},
    "read_energy_import": {Lang.ZH: "用电量", Lang.EN: "energy"},
    "read_energy_export": {Lang.ZH: "反向电量", Lang.EN: "energy exported"},
    "read_power": {Lang.ZH: "功率", Lang.EN: "power"},
    "read_voltage": {Lang.ZH: "电压", Lang.EN: "voltage"},
    "read_current": {Lang.ZH: "电流", Lang.EN: "current"},
    "read_volume": {Lang.ZH: "用水量", Lang.EN: "volume"},
    "read_flow": {Lang.ZH: "流量", Lang.EN: "flow"},
    "read_battery": {Lang.ZH: "电池", Lang.EN: "battery"},
    "read_temperature": {Lang.ZH: "温度", Lang.EN: "temperature"},
    "evt_door.opened": {Lang.ZH: "门已打开", Lang.EN: "door opened"},
    "evt_door.closed": {Lang.ZH: "门已关闭", Lang.EN: "door closed"},
    "evt_door.forced": {Lang.ZH: "门被强行打开", Lang.EN: "door forced open"},
    "evt_door.held_open": {Lang.ZH: "门长时间未关", Lang.EN: "door held open"},
    "evt_door.request_to_exit": {Lang.ZH: "按了出门按钮", Lang.EN: "exit button"},
    "evt_access.granted": {Lang.ZH: "刷卡通过", Lang.EN: "access granted"},
    "evt_access.denied": {Lang.ZH: "刷卡被拒", Lang.EN: "access denied"},
    "evt_access.card_read": {Lang.ZH: "读卡", Lang.EN: "card read"},
    "evt_access.keypad": {Lang.ZH: "键盘输入", Lang.EN: "keypad entry"},
    "evt_smoke.alarm": {Lang.ZH: "烟雾报警", Lang.EN: "smoke detected"},
    "evt_smoke.cleared": {Lang.ZH: "烟雾已消除", Lang.EN: "smoke cleared"},
    "evt_elderly.sos": {Lang.ZH: "SOS 呼救", Lang.EN: "SOS button pressed"},
    "evt_elderly.fall": {Lang.ZH: "检测到跌倒", Lang.EN: "fall detected"},
    "evt_elderly.inactivity": {Lang.ZH: "长时间无活动", Lang.EN: "no activity for a long time"},
    "evt_elderly.cleared": {Lang.ZH: "已解除", Lang.EN: "cleared"},
    "evt_meter.counter_anomaly": {Lang.ZH: "读数异常", Lang.EN: "meter reading anomaly"},
    "evt_device.fault": {Lang.ZH: "设备故障", Lang.EN: "device fault"},
    "evt_device.battery_low": {Lang.ZH: "电池电量低", Lang.EN: "battery low"},
    "evt_device.tamper": {Lang.ZH: "设备外壳被打开", Lang.EN: "tamper (cover opened)"},
    "evt_activity.motion": {Lang.ZH: "有人活动", Lang.EN: "motion"},
    "evt_offline": {Lang.ZH: "设备离线", Lang.EN: "device offline"},
    "evt_online": {Lang.ZH: "设备恢复在线", Lang.EN: "device back online"},
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
    "c_stale_since",
    "c_session_ended",
    "c_ack_expired",
    "c_ack_gone",
    "c_ack_failed",
    "c_ack_offline",
    "c_alerts_active",
    "c_new_alarm",
    "c_escalated",
    "c_escalation_n",
    "c_title",
    *(
        k
        for k in TEXT
        if k.startswith(("type_", "sev_", "state_", "avail_", "kind_", "read_", "evt_", "c_place_"))
    ),
)


def t(key: str, lang: Lang) -> str:
    """The text `key` in `lang`."""
    return TEXT[key][lang]


def t_or(key: str, lang: Lang, fallback: str) -> str:
    """The text `key` in `lang`, or `fallback` (a value the table does not know, as is)."""
    entry = TEXT.get(key)
    return entry[lang] if entry is not None else fallback
