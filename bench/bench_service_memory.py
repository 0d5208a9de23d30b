"""Peak memory one request adds to the service, for inputs at the edges of the limits (issue 15).

    python bench/bench_service_memory.py [--bundle runs/bundles/x] [--jobs]

Starts ``saerad serve`` in a subprocess, then for each input resets the server's peak-RSS counter
(``/proc/<pid>/clear_refs``), sends the request and reads how far the peak rose above the resident
memory before it (``VmHWM - VmRSS``). Inputs: elongated strips, 64-Mpx images in 8 and 16 bits, a
64-Mpx colour JPEG, a run-length-compressed DICOM, all within the default limits (20 MB upload,
64 Mpx, 32,768 px a side), and a real radiograph for scale. ``--jobs`` also sends localisation
jobs (attribution, counterfactual) and an intervention for the 16-bit 64-Mpx image (needs a bundle
with a diffusion model).

Target: every input within the limits adds <= 500 MB. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service_load import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOAL_MB = 500


def png(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **kw)
    return buf.getvalue()


def smooth(height: int, width: int, dtype=np.uint8) -> np.ndarray:
    """A radiograph-like smooth image that compresses well (it must fit in a 20 MB upload)."""
    top = np.iinfo(dtype).max
    rows = (0.5 + 0.4 * np.sin(np.linspace(0, 3, height)))[:, None]
    cols = (0.5 + 0.4 * np.cos(np.linspace(0, 5, width)))[None, :]
    out = np.empty((height, width), dtype=dtype)
    for start in range(0, height, 512):  # without a float copy of the whole image
        out[start : start + 512] = (top * rows[start : start + 512] * cols).astype(dtype)
    return out


def dicom_rle(array: np.ndarray) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "DX", *array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = array.tobytes()
    ds.compress(RLELossless, encoding_plugin="pydicom")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def inputs(data: Path | None) -> list[tuple[str, bytes]]:
    cases = []
    if data is not None and (data / "fixtures" / "00000001_000.png").is_file():
        cases.append(("a real radiograph (fixture, 1024 px)", (data / "fixtures" / "00000001_000.png").read_bytes()))
    strip = np.full((100, 24_000), 128, np.uint8)
    strip[:, ::50] = 255
    cases += [
        ("100 x 24,000 PNG (the issue's 2.6 KB strip)", png(strip)),
        ("1 x 32,768 PNG", png(np.full((1, 32_768), 128, np.uint8))),
        ("32,768 x 1 PNG", png(np.full((32_768, 1), 128, np.uint8))),
        ("2,048 x 32,768 PNG (64 Mpx strip)", png(smooth(2_048, 32_768))),
        ("8,192 x 8,192 PNG (64 Mpx, 8-bit)", png(smooth(8_192, 8_192))),
        ("8,192 x 8,192 PNG (64 Mpx, 16-bit)", png(smooth(8_192, 8_192, np.uint16))),
    ]
    rgb = np.repeat(smooth(8_000, 8_000)[:, :, None], 3, axis=2)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=80)
    del rgb
    cases.append(("8,000 x 8,000 colour JPEG (64 Mpx)", buf.getvalue()))
    levels = smooth(8_000, 8_000, np.uint16) & np.uint16(0xFF00)  # long runs, so RLE fits in 20 MB
    cases.append(("8,000 x 8,000 DICOM, RLE, 16-bit (64 Mpx)", dicom_rle(levels)))
    return cases


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


def measure(pid: int, send) -> tuple[str, float]:
    time.sleep(0.3)
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = kib(pid, "VmRSS")
    status = send()
    return status, (kib(pid, "VmHWM") - before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--jobs", action="store_true", help="also a localisation job and an intervention")
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps of the jobs")
    args = ap.parse_args()
    cases = inputs(args.data if args.data.is_dir() else None)

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="saerad-bench-mem-"))
    env = {**os.environ, "SAERAD_JOB_DB": str(workdir / "jobs.sqlite3"), "SAERAD_LOG_LEVEL": "WARNING",
           "SAERAD_LOCALIZE_STEPS": str(args.steps),
           "SAERAD_INFERENCE_THREADS": "1", "SAERAD_TORCH_THREADS": "1"}
    cmd = [sys.executable, "-c", "from saerad.cli import main; main()", "serve", "--port", str(port), "--device", "cpu"]
    if args.bundle:
        cmd += ["--bundle", args.bundle]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            sys.exit("the server did not become ready")
        client = httpx.Client(base_url=base, timeout=600)
        rows = []
        for name, data in cases:
            status, added = measure(proc.pid, lambda d=data: str(
                client.post("/v1/reports", files={"file": ("x", d)}).status_code))
            rows.append((name, len(data), status, added))
        if args.jobs:
            name, data = next(c for c in cases if "16-bit" in c[0] and "PNG" in c[0])  # the heaviest to decode

            def job(path: str, params: dict) -> str:
                r = client.post(path, params=params, files={"file": ("x", data)})
                if r.status_code != 202:
                    return str(r.status_code)
                link = r.json()["links"]["self"]
                while (body := client.get(link).json())["state"] not in ("done", "failed"):
                    time.sleep(0.5)
                return body["state"]

            for method in ("attribution", "counterfactual"):
                rows.append((f"localisation job ({method}), {name}", len(data), *measure(
                    proc.pid, lambda m=method: job("/v1/reports", {"localize": m}))))
            active = client.post("/v1/reports", files={"file": ("x", data)}).json()["features"]
            feature = active[0]["id"] if active else 0  # removing an inactive feature is refused
            rows.append((f"intervention job (remove #{feature}), {name}", len(data), *measure(
                proc.pid, lambda: job("/v1/interventions", {"feature": feature, "steps": args.steps}))))
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"\nPeak memory added by one request (server: saerad serve, bundle {args.bundle or 'embedded default'})\n")
    print("| input | bytes | status | added peak | target |")
    print("|---|---|---|---|---|")
    for name, size, status, added in rows:
        verdict = "PASS" if added <= GOAL_MB else "MISS"
        print(f"| {name} | {size:,} | {status} | {added:.0f} MB | <= {GOAL_MB} MB {verdict} |")


if __name__ == "__main__":
    main()
