//! Result videos (`predict --render`, `stream --render`) from a real clip: decoded back, they
//! have the input's frame count and size (short side capped at 480, sides even), and outputs
//! that are inputs, or not video containers, are refused before any work.

mod common;

use std::path::Path;

use common::run::bin;

fn decoded(path: &Path) -> (usize, u32, u32) {
    let info = gateshift::data::video::probe(path, true).unwrap();
    (info.frames, info.width, info.height)
}

#[test]
fn rendered_videos_decode_back_with_the_inputs_frames_and_size() {
    let (Some(shared), Some(clips)) = (common::shared(), common::clips()) else { return };
    let dir = common::tmp("render");
    let checkpoint = shared.join("fixtures/tsm_resnet18_shift8_blockres_seg8.pth.tar");
    let clip = clips.join("v_SoccerJuggling_g23_c01.avi");
    let want = decoded(&clip);
    let model = ["--arch", "resnet18", "--temporal", "tsm", "--segments", "8", "--checkpoint"];
    let predict = dir.join("predict.mp4");
    let out =
        bin().arg("predict").arg(&clip).args(model).arg(&checkpoint).arg("--render").arg(&predict).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(decoded(&predict), want, "predict --render");
    // A symlink as the output: its target gets the video, the link stays.
    let (target, link) = (dir.join("target.mp4"), dir.join("link.mp4"));
    std::fs::write(&target, b"").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = bin().arg("predict").arg(&clip).args(model).arg(&checkpoint).arg("--render").arg(&link).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_eq!(decoded(&target), want, "the link's target");
    let stream = dir.join("stream.mkv");
    let out = bin()
        .arg("stream")
        .arg(&clip)
        .args(model)
        .arg(&checkpoint)
        .args(["--window", "16", "--stride", "16", "--render"])
        .arg(&stream)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(decoded(&stream), want, "stream --render");

    // On a copy of the clip: a regression must not write over the shared one.
    let copy = dir.join("clip.avi");
    std::fs::copy(&clip, &copy).unwrap();
    for (bad, says) in [(copy.clone(), "refusing to write over it"), (dir.join("frames.txt"), ".mp4, .mkv")] {
        let out =
            bin().arg("predict").arg(&copy).args(model).arg(&checkpoint).arg("--render").arg(&bad).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{stderr}");
    }
    assert_eq!(decoded(&copy), want, "the input changed");
}
