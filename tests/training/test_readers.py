"""Each official layout, faked in miniature, read back; and the bad-input errors."""

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from bpclip_core.data import DatasetError, koniq_official_split, read_dataset
from bpclip_core.data.readers import read_pyiqa_meta_info
from bpclip_core.data.splits import official_split


def _png(path, value=100, size=(40, 36)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 30)).save(path)
    return path


def _cells(names):
    array = np.empty((1, len(names)), dtype=object)
    for i, name in enumerate(names):
        array[0, i] = name
    return array


def test_live_release2(tmp_path):
    refs = ["parrots.bmp", "house.bmp"]
    for ref in refs:
        _png(tmp_path / "refimgs" / ref)
    folders = {"jp2k": 2, "jpeg": 2, "wn": 1, "gblur": 1, "fastfading": 1}
    refnames, dmos, orgs = [], [], []
    for folder, count in folders.items():
        lines = []
        for k in range(1, count + 1):
            _png(tmp_path / folder / f"img{k}.bmp", 20 * k)
            lines.append(f"{refs[k % 2]} img{k}.bmp 0.5")
            refnames.append(refs[k % 2])
            dmos.append(10.0 * len(dmos))
            orgs.append(1 if (folder == "wn") else 0)
        (tmp_path / folder / "info.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "wn" / "img1.bmp").unlink()  # a reference entry (orgs == 1) needs no file
    savemat(tmp_path / "dmos.mat", {"dmos": np.array([dmos]), "orgs": np.array([orgs])})
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": _cells(refnames)})
    dataset = read_dataset("live", tmp_path)
    assert len(dataset) == 6 and dataset.mode == "fr"
    assert dataset.score_scale.higher_is_better is False
    first = dataset.items[0]
    assert first.image == tmp_path / "jp2k" / "img1.bmp" and first.reference.name == "house.bmp"
    assert first.content == "house.bmp"
    (tmp_path / "refnames_all.mat").unlink()
    with pytest.raises(DatasetError, match=r"missing annotation file.*refnames_all\.mat"):
        read_dataset("live", tmp_path)


def test_csiq_from_the_csv_export(tmp_path):
    _png(tmp_path / "src_imgs" / "1600.png")
    _png(tmp_path / "dst_imgs" / "awgn" / "1600.AWGN.1.png")
    _png(tmp_path / "dst_imgs" / "jpeg2000" / "1600.jpeg2000.2.png")
    _png(tmp_path / "dst_imgs" / "fnoise" / "1600.fnoise.3.png")
    (tmp_path / "csiq.DMOS.csv").write_text(
        "image,dst_idx,dst_type,dst_lev,dmos_std,dmos\n1600,1,noise,1,0.01,0.06\n"
        "1600,3,jpeg 2000,2,0.02,0.2\n1600,5,f noise,3,0.03,0.4\n"
    )
    dataset = read_dataset("csiq", tmp_path)
    assert [item.image.name for item in dataset.items] == [
        "1600.AWGN.1.png",
        "1600.jpeg2000.2.png",
        "1600.fnoise.3.png",
    ]
    assert dataset.score_scale.higher_is_better is False
    (tmp_path / "csiq.DMOS.csv").unlink()
    with pytest.raises(DatasetError, match=r"csiq\.DMOS\.xlsx"):
        read_dataset("csiq", tmp_path)


def test_tid2013(tmp_path):
    _png(tmp_path / "reference_images" / "I01.BMP")
    _png(tmp_path / "reference_images" / "I02.BMP")
    for name in ("i01_01_1.bmp", "i01_02_5.bmp", "i02_01_1.bmp"):
        _png(tmp_path / "distorted_images" / name)
    (tmp_path / "mos_with_names.txt").write_text("5.5 i01_01_1.bmp\n2.1 i01_02_5.bmp\n4.0 i02_01_1.bmp\n")
    dataset = read_dataset("tid2013", tmp_path)
    assert len(dataset) == 3 and {i.content for i in dataset.items} == {"i01", "i02"}
    assert dataset.items[0].reference.name == "I01.BMP"
    (tmp_path / "mos_with_names.txt").write_text("5.5 i01_01_1.bmp\nbad i01_02_5.bmp\n")
    with pytest.raises(DatasetError, match="line 2.*'bad' is not a number"):
        read_dataset("tid2013", tmp_path)


def _kadid(tmp_path, rows):
    for name in ("I01.png", "I01_01_01.png", "I01_01_02.png"):
        _png(tmp_path / "images" / name)
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n" + "\n".join(rows) + "\n")


def test_kadid10k_and_its_bad_inputs(tmp_path):
    _kadid(tmp_path, ["I01_01_01.png,I01.png,4.5,0.1", "I01_01_02.png,I01.png,3.0,0.2"])
    dataset = read_dataset("kadid-10k", tmp_path)
    assert len(dataset) == 2 and dataset.score_scale.higher_is_better
    _kadid(tmp_path, ["I01_01_01.png,I01.png,4.5,0.1", "I01_01_01.png,I01.png,3.0,0.2"])
    with pytest.raises(DatasetError, match="2 times"):
        read_dataset("kadid10k", tmp_path)
    _kadid(tmp_path, ["I01_01_01.png,I01.png,4.5,0.1", "I01_01_09.png,I01.png,3.0,0.2"])
    with pytest.raises(DatasetError, match=r"do not exist, e\.g\. .*I01_01_09\.png"):
        read_dataset("kadid10k", tmp_path)
    _kadid(tmp_path, ["I01_01_01.png,I01.png,n/a,0.1"])
    with pytest.raises(DatasetError, match="'n/a' is not a number"):
        read_dataset("kadid10k", tmp_path)
    (tmp_path / "dmos.csv").write_text("distorted,reference,score\nI01_01_01.png,I01.png,4\n")
    with pytest.raises(DatasetError, match=r"no column\(s\) \['dist_img', 'ref_img', 'dmos'\]"):
        read_dataset("kadid10k", tmp_path)


def test_clive_drops_the_seven_training_images(tmp_path):
    base = tmp_path / "ChallengeDB_release"
    names = [f"t{i}.bmp" for i in range(7)] + ["10.JPG", "11.JPG"]
    for name in names[7:]:
        _png(base / "Images" / name)
    (base / "Data").mkdir(parents=True)
    savemat(base / "Data" / "AllImages_release.mat", {"AllImages_release": _cells(names).T})
    savemat(base / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[50.0] * 7 + [30.0, 70.0]])})
    # 9 entries is not the official 1169, so nothing is dropped and the 7 missing files are an error
    with pytest.raises(DatasetError, match="7 image file"):
        read_dataset("clive", tmp_path)
    names = [f"t{i}.bmp" for i in range(7)] + [f"{i}.JPG" for i in range(1162)]
    savemat(base / "Data" / "AllImages_release.mat", {"AllImages_release": _cells(names).T})
    savemat(base / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[50.0] * 7 + list(range(1162))])})
    for name in names[7:]:
        (base / "Images" / name).write_bytes(b"")
    dataset = read_dataset("clive", tmp_path)
    assert len(dataset) == 1162 and dataset.mode == "nr"


def test_koniq10k_with_official_split(tmp_path):
    names = [f"{i}.jpg" for i in range(5)]
    for name in names:
        _png(tmp_path / "1024x768" / name)
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"
        + "\n".join(f"{n},1,1,1,1,1,5,{1 + i * 0.5},0.3,50" for i, n in enumerate(names))
    )
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(
        "image_name,set\n0.jpg,training\n1.jpg,training\n2.jpg,training\n3.jpg,validation\n4.jpg,test\n"
    )
    dataset = read_dataset("koniq10k", tmp_path)
    assert len(dataset) == 5 and dataset.score_scale.mos_max == 3.0
    sets = koniq_official_split(tmp_path)
    assert sets == {"train": ["0.jpg", "1.jpg", "2.jpg"], "val": ["3.jpg"], "test": ["4.jpg"]}
    split = official_split(dataset, sets).splits[0]  # the cached PNG copies keep their official parts
    assert (split.train, split.val, split.test) == ([0, 1, 2], [3], [4])


def test_koniq10k_is_read_at_512x384_as_in_table_1(tmp_path):
    names = ["a.jpg", "b.jpg"]
    for name in names:
        _png(tmp_path / "1024x768" / name, size=(1024, 768))
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text(
        "image_name,MOS\n" + "\n".join(f"{n},{2 + i}" for i, n in enumerate(names))
    )
    dataset = read_dataset("koniq10k", tmp_path)  # the 1024x768 release: resized once, cached
    assert [Image.open(item.image).size for item in dataset.items] == [(512, 384)] * 2
    assert all(item.image.parent == tmp_path / ".bpclip-cache" / "short384" for item in dataset.items)
    cached = dataset.items[0].image.stat().st_mtime_ns
    assert read_dataset("koniq10k", tmp_path).items[0].image.stat().st_mtime_ns == cached  # made once
    for name in names:  # the 512x384 release is read as it is
        _png(tmp_path / "512x384" / name, size=(512, 384))
    assert [item.image for item in read_dataset("koniq10k", tmp_path).items] == [
        tmp_path / "512x384" / name for name in names
    ]


def test_spaq_csv_export_is_resized_to_short_side_448_and_cached(tmp_path):
    _png(tmp_path / "TestImage" / "00001.jpg", size=(1000, 600))
    _png(tmp_path / "TestImage" / "00002.jpg", size=(500, 900))
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "MOS and Image attribute scores.csv").write_text(
        "Image name,MOS,Brightness\n00001.jpg,42.5,50\n00002.jpg,80,60\n"
    )
    dataset = read_dataset("spaq", tmp_path, cache_dir=tmp_path / "cache")
    sizes = [Image.open(item.image).size for item in dataset.items]
    assert sizes == [(747, 448), (448, 806)]
    assert all(item.image.parent == tmp_path / "cache" for item in dataset.items)
    stamp = dataset.items[0].image.stat().st_mtime_ns
    assert read_dataset("spaq", tmp_path, cache_dir=tmp_path / "cache").items[0].image.stat().st_mtime_ns == stamp


def test_generic_csv_and_pyiqa_meta_info(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png")
    _png(tmp_path / "refs" / "r.png")
    (tmp_path / "nr.csv").write_text("image,mos\nimgs/a.png,1\nimgs/b.png,2\n")
    assert read_dataset("csv", tmp_path / "nr.csv").mode == "nr"
    (tmp_path / "meta_info_ToyDataset.csv").write_text("ref_name,dist_name,mos\nr.png,a.png,3\nr.png,b.png,4\n")
    fr = read_pyiqa_meta_info(tmp_path / "meta_info_ToyDataset.csv", tmp_path / "imgs", tmp_path / "refs")
    assert fr.name == "Toy" and fr.mode == "fr" and fr.items[1].mos == 4
    (tmp_path / "meta_info_NR.csv").write_text("name,mos,std\na.png,3,0.1\nb.png,4,0.2\n")
    assert read_pyiqa_meta_info(tmp_path / "meta_info_NR.csv", tmp_path / "imgs").mode == "nr"
    (tmp_path / "bad.csv").write_text("image,mos\nimgs/a.png,2\nimgs/b.png,2\n")
    with pytest.raises(DatasetError, match="every MOS"):
        read_dataset("csv", tmp_path / "bad.csv")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        read_dataset("imagenet", tmp_path)
