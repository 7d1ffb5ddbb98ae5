//! Phrases shared by several rules' summaries, and the one formula of distance.

use eldercare_model::{DeviceKind, Text};

pub(crate) fn kind_name(k: DeviceKind) -> Text {
    let zh = match k {
        DeviceKind::SleepSensor => "睡眠监测带",
        DeviceKind::VitalBand => "生命体征手环",
        DeviceKind::Pir => "红外感应器",
        DeviceKind::GpsWatch => "定位手表",
        DeviceKind::SosButton => "紧急呼叫按钮",
        DeviceKind::Gateway => "家庭网关",
    };
    Text::new(k.as_str(), zh)
}

/// Great-circle distance in metres. Written here because it is one
/// formula; a geometry crate would bring far more than this needs.
pub(crate) fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const R: f64 = 6_371_000.0;
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let dla = la2 - la1;
    let dlo = (b.1 - a.1).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

pub(crate) fn minutes(ms: i64) -> Text {
    let m = ms / 60_000;
    if m >= 60 {
        Text::new(
            format!("{} h {} min", m / 60, m % 60),
            format!("{} 小时 {} 分钟", m / 60, m % 60),
        )
    } else {
        Text::new(format!("{m} min"), format!("{m} 分钟"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_about_right() {
        // One thousandth of a degree of latitude is ~111 m.
        let d = distance_m((31.2, 121.4), (31.201, 121.4));
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }
}
