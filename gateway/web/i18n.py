"""The kiosk's words in Chinese and English; one table, so a missing string shows in tests."""

from __future__ import annotations

from gateway.web.settings import Lang

__all__ = ["TEXT", "t"]

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
}


def t(key: str, lang: Lang) -> str:
    """The kiosk text `key` in `lang`."""
    return TEXT[key][lang]
