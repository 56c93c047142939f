import numpy as np
import pytest

from drivelab import schema as S


def test_comma10k_palette_matches_published_colours():
    sch = S.comma10k()
    assert sch.names == ["road", "lane markings", "undrivable", "movable", "my car"]
    assert sch.hex_colors() == ["#402020", "#ff0000", "#808060", "#00ff66", "#cc00ff"]
    driver = S.comma10k(driver_camera=True)
    assert driver.num_classes == 6 and driver.hex_colors()[5] == "#00ccff"


def test_colour_round_trip_is_exact_and_flags_off_palette_pixels():
    sch = S.comma10k()
    rng = np.random.default_rng(0)
    mask = rng.integers(0, sch.num_classes, size=(17, 23)).astype(np.uint8)
    rgb = sch.colorize(mask)
    decoded, bad = sch.encode_colors(rgb)
    assert not bad.any()
    np.testing.assert_array_equal(decoded, mask)
    rgb[3, 4] = (0x40, 0x20, 0x21)  # one channel off by one, as anti-aliasing makes
    decoded, bad = sch.encode_colors(rgb)
    assert bad.sum() == 1 and bad[3, 4]
    assert decoded[3, 4] == sch.ignore_index


def test_cityscapes_19_trainids_follow_the_official_table():
    sch = S.cityscapes("19")
    assert sch.num_classes == 19
    assert sch.names[0] == "road" and sch.names[-1] == "bicycle"
    lut = np.array(sch.label_lut)
    # labelId -> trainId pairs from cityscapesscripts/helpers/labels.py
    official = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(34):
        assert lut[label_id] == official.get(label_id, 255), label_id


def test_cityscapes_variants_are_configurable():
    all30 = S.cityscapes("30")
    assert all30.num_classes == 30 and "polegroup" in all30.names
    s29 = S.cityscapes("29")
    assert s29.num_classes == 29 and "polegroup" not in s29.names
    assert s29.label_lut[18] == s29.names.index("pole")  # polegroup folded into pole
    assert s29.label_lut[0] == 255  # unlabeled stays ignored
    custom = S.cityscapes(["road", "car"], merge={"truck": "car"})
    assert custom.label_lut[27] == 1 and custom.label_lut[8] == 255
    with pytest.raises(ValueError, match="unknown Cityscapes"):
        S.cityscapes(["road", "spaceship"])


def test_schema_serialises_through_checkpoints():
    for name in S.SCHEMAS:
        sch = S.get_schema(name)
        assert S.ClassSchema.from_dict(sch.to_dict()) == sch
    with pytest.raises(ValueError, match="unknown class schema"):
        S.get_schema("kitti")


def test_coco_schema_puts_background_first_in_category_id_order():
    sch = S.coco([{"id": 7, "name": "box"}, {"id": 2, "name": "bag"}])
    assert sch.names == ["background", "bag", "box"]
    assert sch.extra["category_ids"] == [2, 7]
