//! Official checkpoint key names ↔ gateshift module paths.
//!
//! Our modules carry the official layer names; the only differences are structural:
//! - BN-Inception (Caffe naming) keeps a conv `X`, its BN `X_bn` and its GSM `gsm_X` (GSF:
//!   `gsf_X`) as siblings; we group them in one unit: `X.conv`, `X.bn`, `X.temporal`.
//! - ResNet (torchvision naming) numbers the downsample pair `downsample.0/1`; we name them
//!   `downsample.conv/bn`. TSM wraps a shifted layer in `.net`; the shift has no weights, so
//!   `.net` is dropped on import and restored on export. GSM in a block is `gsm` on disk,
//!   GSF `gsf` (as the official GSF code).

use crate::model::{Arch, ShiftPlace, TemporalKind};

/// Official key (without `module.`) → module path. Keys without `base_model.` (backbone
/// files as published: torchvision's `layer1.0.conv1.weight`, the Caffe-named BN-Inception
/// `conv1_7x7_s2_bn.running_mean`, the GSM code's InceptionV3 `conv_Conv2D.weight`) are the
/// backbone's own; their ImageNet classifier (`fc`, `last_linear`, `top_cls_fc`) maps to no
/// parameter of ours.
pub fn to_internal(arch: Arch, key: &str) -> String {
    if arch.lite().is_some() {
        // ImageNet files name the classifier `_fc` and have no `base_model.` prefix.
        if let Some(fc) = key.strip_prefix("_fc.") {
            return format!("new_fc.{fc}");
        }
        if key.starts_with('_') {
            return format!("base_model.{}", lite_to_internal(key));
        }
    }
    if key.starts_with("new_fc.") {
        return key.to_string();
    }
    let rest = key.strip_prefix("base_model.").unwrap_or(key);
    let inner = match arch {
        Arch::BnInception => caffe_to_internal(rest),
        Arch::InceptionV3 => inception_v3_to_internal(rest),
        a if a.lite().is_some() => lite_to_internal(rest),
        _ => torchvision_to_internal(rest),
    };
    format!("base_model.{inner}")
}

/// Module path → official key (without `module.`).
pub fn to_official(arch: Arch, temporal: TemporalKind, place: ShiftPlace, path: &str) -> String {
    let Some(rest) = path.strip_prefix("base_model.") else {
        return path.to_string();
    };
    let outer = match arch {
        Arch::BnInception => internal_to_caffe(rest, temporal),
        Arch::InceptionV3 => internal_to_inception_v3(rest, temporal),
        a if a.lite().is_some() => internal_to_lite(rest),
        _ => internal_to_torchvision(rest, arch, temporal, place),
    };
    format!("base_model.{outer}")
}

/// EfficientNet-Lite layers whose weights sit in a `SameConv` wrapper (`X` ↔ `X.conv`).
const LITE_CONVS: [&str; 5] = ["conv_stem", "expand_conv", "depthwise_conv", "project_conv", "conv_head"];

/// `_blocks.3._expand_conv.weight` → `blocks.3.expand_conv.conv.weight`.
fn lite_to_internal(key: &str) -> String {
    let mut out = Vec::new();
    for part in key.split('.') {
        let p = part.strip_prefix('_').unwrap_or(part);
        out.push(p.to_string());
        if LITE_CONVS.contains(&p) {
            out.push("conv".into());
        }
    }
    out.join(".")
}

fn internal_to_lite(path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if *p == "conv" && i > 0 && LITE_CONVS.contains(&parts[i - 1]) {
            continue;
        }
        let named =
            ["conv_stem", "bn0", "bn1", "bn2", "blocks", "conv_head", "expand_conv", "depthwise_conv", "project_conv"];
        out.push(if named.contains(p) { format!("_{p}") } else { p.to_string() });
    }
    out.join(".")
}

/// The official names of the temporal modules' tensors (`gsm`, `gsf`), from their specs.
fn official_names() -> impl Iterator<Item = &'static str> {
    TemporalKind::ALL.iter().filter_map(|k| k.spec()?.official)
}

/// `layer` without a temporal module's official prefix (`gsm_X` → `X`), if it has one.
fn strip_module_prefix(layer: &str) -> Option<&str> {
    official_names().find_map(|name| layer.strip_prefix(name)?.strip_prefix('_'))
}

/// The name a temporal module's tensors take in official checkpoints (`gsm` where the module
/// has none of its own, as the official code names any temporal module's place).
fn official_name(temporal: TemporalKind) -> &'static str {
    temporal.spec().and_then(|s| s.official).unwrap_or("gsm")
}

/// The temporal module an official checkpoint's keys hold tensors of, if any: a key with a
/// module's official name as a path segment (`layer1.0.gsm.…`) or layer prefix (`gsm_X.…`).
pub fn temporal_in<'a>(keys: impl IntoIterator<Item = &'a String>) -> Option<TemporalKind> {
    let keys: Vec<&String> = keys.into_iter().collect();
    TemporalKind::ALL.iter().copied().find(|k| {
        let Some(name) = k.spec().and_then(|s| s.official) else { return false };
        keys.iter().any(|key| {
            key.split('.').any(|seg| seg == name || seg.strip_prefix(name).is_some_and(|r| r.starts_with('_')))
        })
    })
}

fn caffe_to_internal(key: &str) -> String {
    if let Some(rest) = strip_module_prefix(key)
        && let Some((layer, tail)) = rest.split_once('.')
    {
        return format!("{layer}.temporal.{tail}");
    }
    let (layer, param) = key.split_once('.').unwrap_or((key, ""));
    match layer.strip_suffix("_bn") {
        Some(conv) => format!("{conv}.bn.{param}"),
        None => format!("{layer}.conv.{param}"),
    }
}

fn internal_to_caffe(path: &str, temporal: TemporalKind) -> String {
    let mut parts = path.splitn(3, '.');
    let (layer, part, tail) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match part {
        "conv" => format!("{layer}.{tail}"),
        "bn" => format!("{layer}_bn.{tail}"),
        "temporal" => format!("{}_{layer}.{tail}", official_name(temporal)),
        _ => path.to_string(),
    }
}

/// Splits an InceptionV3 layer id into its block and the layer inside it:
/// `mixed_10_tower_1_conv` → (`mixed_10`, `tower_1_conv`); stem layers (`conv_3`) have none.
fn inception_v3_block(layer: &str) -> (Option<&str>, &str) {
    let Some(rest) = layer.strip_prefix("mixed_") else { return (None, layer) };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && rest[digits..].starts_with('_') {
        (Some(&layer[..6 + digits]), &rest[digits + 1..])
    } else {
        (Some("mixed"), rest)
    }
}

/// `gsm_mixed_3_tower_conv_Conv2D.bn.weight` → `mixed_3.tower_conv.temporal.bn.weight`;
/// `X_Conv2D.*` → `X.conv.*`, `X_batchnorm.*` → `X.bn.*`.
fn inception_v3_to_internal(key: &str) -> String {
    let (layer, param) = key.split_once('.').unwrap_or((key, ""));
    let module = strip_module_prefix(layer);
    let (layer, part) = if let Some(l) = module.and_then(|l| l.strip_suffix("_Conv2D")) {
        (l, "temporal")
    } else if let Some(l) = layer.strip_suffix("_Conv2D") {
        (l, "conv")
    } else if let Some(l) = layer.strip_suffix("_batchnorm") {
        (l, "bn")
    } else {
        return key.to_string();
    };
    match inception_v3_block(layer) {
        (Some(block), unit) => format!("{block}.{unit}.{part}.{param}"),
        (None, unit) => format!("{unit}.{part}.{param}"),
    }
}

fn internal_to_inception_v3(path: &str, temporal: TemporalKind) -> String {
    let parts: Vec<&str> = path.splitn(4, '.').collect();
    // Stem units: `conv_3.bn.weight`; block units: `mixed_1.tower_conv.bn.weight`.
    let (layer, part, tail) = match parts.as_slice() {
        [block, unit, part, tail] if block.starts_with("mixed") => {
            let layer = if *block == "mixed" { format!("mixed_{unit}") } else { format!("{block}_{unit}") };
            (layer, *part, *tail)
        }
        [unit, part, tail] => (unit.to_string(), *part, *tail),
        _ => return path.to_string(),
    };
    match part {
        "conv" => format!("{layer}_Conv2D.{tail}"),
        "bn" => format!("{layer}_batchnorm.{tail}"),
        "temporal" => format!("{}_{layer}_Conv2D.{tail}", official_name(temporal)),
        _ => path.to_string(),
    }
}

fn torchvision_to_internal(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').filter(|p| *p != "net").collect();
    let parts: Vec<&str> =
        parts.into_iter().map(|p| if official_names().any(|n| n == p) { "temporal" } else { p }).collect();
    parts.join(".").replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")
}

fn internal_to_torchvision(path: &str, arch: Arch, temporal: TemporalKind, place: ShiftPlace) -> String {
    let mut key = path
        .replace("downsample.conv.", "downsample.0.")
        .replace("downsample.bn.", "downsample.1.")
        .replace(".temporal.", &format!(".{}.", official_name(temporal)));
    if temporal == TemporalKind::Tsm && key.starts_with("layer") {
        // layerN.i.<rest>: TSM wraps conv1 (blockres) or the whole block (block) in `.net`,
        // in the blocks that carry a shift.
        let mut parts = key.splitn(3, '.');
        let (layer, idx, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let shifted = idx.parse().is_ok_and(|i| crate::model::backbone::resnet::ResNet::shifts_block(arch, place, i));
        key = match place {
            _ if !shifted => key.clone(),
            ShiftPlace::Blockres if rest.starts_with("conv1.") => format!("{layer}.{idx}.conv1.net.{}", &rest[6..]),
            ShiftPlace::Block => format!("{layer}.{idx}.net.{rest}"),
            _ => key.clone(),
        };
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bninception_names_round_trip() {
        for key in [
            "base_model.conv1_7x7_s2.weight",
            "base_model.conv1_7x7_s2_bn.running_var",
            "base_model.gsm_inception_3a_1x1.conv3D.weight",
            "base_model.gsm_inception_3a_1x1.bn.bias",
            "base_model.inception_5b_pool_proj_bn.weight",
            "new_fc.weight",
        ] {
            let internal = to_internal(Arch::BnInception, key);
            assert_eq!(to_official(Arch::BnInception, TemporalKind::Gsm, ShiftPlace::Blockres, &internal), key);
        }
        assert_eq!(
            to_internal(Arch::BnInception, "base_model.gsm_inception_3a_1x1.bn.weight"),
            "base_model.inception_3a_1x1.temporal.bn.weight"
        );
        assert_eq!(to_internal(Arch::BnInception, "base_model.conv2_3x3_bn.bias"), "base_model.conv2_3x3.bn.bias");
    }

    #[test]
    fn inception_v3_names_round_trip() {
        let cases = [
            ("base_model.conv_Conv2D.weight", "base_model.conv.conv.weight"),
            ("base_model.conv_4_batchnorm.running_var", "base_model.conv_4.bn.running_var"),
            ("base_model.mixed_conv_Conv2D.bias", "base_model.mixed.conv.conv.bias"),
            ("base_model.gsm_mixed_conv_Conv2D.conv3D.weight", "base_model.mixed.conv.temporal.conv3D.weight"),
            ("base_model.mixed_tower_2_conv_batchnorm.weight", "base_model.mixed.tower_2_conv.bn.weight"),
            ("base_model.gsm_mixed_3_tower_conv_Conv2D.bn.bias", "base_model.mixed_3.tower_conv.temporal.bn.bias"),
            (
                "base_model.mixed_10_tower_1_mixed_conv_1_Conv2D.weight",
                "base_model.mixed_10.tower_1_mixed_conv_1.conv.weight",
            ),
            ("new_fc.bias", "new_fc.bias"),
        ];
        for (key, internal) in cases {
            assert_eq!(to_internal(Arch::InceptionV3, key), internal);
            assert_eq!(to_official(Arch::InceptionV3, TemporalKind::Gsm, ShiftPlace::Blockres, internal), key);
        }
    }

    #[test]
    fn tsm_resnet_names_round_trip() {
        let key = "base_model.layer1.0.conv1.net.weight";
        let internal = to_internal(Arch::Resnet18, key);
        assert_eq!(internal, "base_model.layer1.0.conv1.weight");
        assert_eq!(to_official(Arch::Resnet18, TemporalKind::Tsm, ShiftPlace::Blockres, &internal), key);
        let ds = "base_model.layer2.0.downsample.1.running_mean";
        let internal = to_internal(Arch::Resnet18, ds);
        assert_eq!(internal, "base_model.layer2.0.downsample.bn.running_mean");
        assert_eq!(to_official(Arch::Resnet18, TemporalKind::Tsm, ShiftPlace::Blockres, &internal), ds);
        let block = "base_model.layer3.1.net.bn2.weight";
        let internal = to_internal(Arch::Resnet50, block);
        assert_eq!(to_official(Arch::Resnet50, TemporalKind::Tsm, ShiftPlace::Block, &internal), block);
        assert_eq!(
            to_official(Arch::Resnet18, TemporalKind::None, ShiftPlace::Blockres, &internal),
            "base_model.layer3.1.bn2.weight"
        );
    }

    #[test]
    fn efficientnet_lite_names_round_trip() {
        let lite = "base_model._blocks.3._expand_conv.weight";
        assert_eq!(to_internal(Arch::EfficientnetLite0, lite), "base_model.blocks.3.expand_conv.conv.weight");
        assert_eq!(to_internal(Arch::EfficientnetLite0, "_bn0.running_mean"), "base_model.bn0.running_mean");
        assert_eq!(to_internal(Arch::EfficientnetLite0, "_fc.weight"), "new_fc.weight");
        let internal = to_internal(Arch::EfficientnetLite0, lite);
        assert_eq!(to_official(Arch::EfficientnetLite0, TemporalKind::Gsm, ShiftPlace::Blockres, &internal), lite);
        let gsm = "base_model._blocks.5.temporal.conv3D.weight";
        let internal = to_internal(Arch::EfficientnetLite0, gsm);
        assert_eq!(internal, "base_model.blocks.5.temporal.conv3D.weight");
        assert_eq!(to_official(Arch::EfficientnetLite0, TemporalKind::Gsm, ShiftPlace::Blockres, &internal), gsm);
    }

    #[test]
    fn gsf_keys_follow_the_official_gsf_code() {
        let bn = "base_model.gsf_inception_4d_1x1.channel_conv2.weight";
        let internal = to_internal(Arch::BnInception, bn);
        assert_eq!(internal, "base_model.inception_4d_1x1.temporal.channel_conv2.weight");
        assert_eq!(to_official(Arch::BnInception, TemporalKind::Gsf, ShiftPlace::Blockres, &internal), bn);
        let v3 = "base_model.gsf_mixed_3_conv_Conv2D.channel_conv1.bias";
        let internal = to_internal(Arch::InceptionV3, v3);
        assert_eq!(internal, "base_model.mixed_3.conv.temporal.channel_conv1.bias");
        assert_eq!(to_official(Arch::InceptionV3, TemporalKind::Gsf, ShiftPlace::Blockres, &internal), v3);
        let res = "base_model.layer3.5.gsf.conv3D.weight";
        let internal = to_internal(Arch::Resnet50, res);
        assert_eq!(internal, "base_model.layer3.5.temporal.conv3D.weight");
        assert_eq!(to_official(Arch::Resnet50, TemporalKind::Gsf, ShiftPlace::Blockres, &internal), res);
    }
}
