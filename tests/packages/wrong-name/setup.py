import base64
import hashlib
import zipfile

from setuptools import setup

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1 takes bdist_wheel from the wheel package
    from wheel.bdist_wheel import bdist_wheel


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d\n" % (name, digest, len(data))


class OtherNameBdistWheel(bdist_wheel):
    """Builds the wheel, then rewrites its METADATA to name another project (RECORD kept valid).

    pip's metadata step (prepare_metadata_for_build_wheel) still reports wrong-name, and the
    wheel file and .dist-info folder are still named wrong_name, so pip accepts the wheel.
    """

    def run(self):
        super().run()
        wheel_path = self.distribution.dist_files[-1][2]
        with zipfile.ZipFile(wheel_path) as wheel:
            members = {info.filename: wheel.read(info) for info in wheel.infolist()}
        record = next(name for name in members if name.endswith(".dist-info/RECORD"))
        metadata = record[: -len("RECORD")] + "METADATA"
        members[metadata] = members[metadata].replace(b"Name: wrong-name\n", b"Name: other-name\n", 1)
        lines = [record_line(name, data) for name, data in members.items() if name != record]
        members[record] = ("".join(lines) + record + ",,\n").encode()
        with zipfile.ZipFile(wheel_path, "w", zipfile.ZIP_DEFLATED) as wheel:
            for name, data in members.items():
                wheel.writestr(name, data)


setup(cmdclass={"bdist_wheel": OtherNameBdistWheel})
