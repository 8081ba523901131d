"""Build script: setuptools drives CMake (see CMakeLists.txt).

Environment knobs:
  TIEMB_CUDA=AUTO|ON|OFF          build the CUDA sources (AUTO: where nvcc exists)
  TIEMB_CUDA_ARCHITECTURES=75;90  CUDA architectures (default 75;80;86;90)
  TIEMB_REDIS=AUTO|ON|OFF         link hiredis for Redis Cluster tables (AUTO: where pkg-config finds it)
  TIEMB_TF_OPS=AUTO|ON|OFF        build the TensorFlow op library (AUTO: where TF imports)
  TIEMB_XLA_FFI=AUTO|ON|OFF       build the XLA FFI lookup handlers (AUTO: where jaxlib imports)
  CMAKE_ARGS="..."                extra arguments for the CMake configure step
  CMAKE_BUILD_PARALLEL_LEVEL=N    parallel compile jobs (default: all cores)
  DEBUG=1                         debug build
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "tiemb" / "_version.py").read_text()).group(1)

_TF_PROBE = (
    "import json, tensorflow as tf; "
    "print(json.dumps([tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags(), "
    "bool(tf.sysconfig.get_build_info().get('is_cuda_build'))]))"
)


def tensorflow_flags():
    """Compile and link flags of the TensorFlow in the *target* environment.

    pip's build isolation hides the target's site-packages through PYTHONPATH
    and PYTHONNOUSERSITE; the probe runs the same interpreter without them.
    Returns None where TensorFlow is not importable (or TIEMB_TF_OPS=OFF).
    """
    mode = os.environ.get("TIEMB_TF_OPS", "AUTO").upper()
    if mode == "OFF":
        return None
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", _TF_PROBE], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        if mode == "ON":
            raise RuntimeError("TIEMB_TF_OPS=ON but TensorFlow is not importable:\n" + proc.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def xla_ffi_include():
    """jaxlib's XLA FFI header directory in the *target* environment (probed
    like TensorFlow above), or "" where jaxlib is not importable or
    TIEMB_XLA_FFI=OFF. The handlers are header-only against it: the built
    extension does not link jaxlib, and runs with any jaxlib whose FFI API
    is compatible (XLA keeps the C API versioned)."""
    mode = os.environ.get("TIEMB_XLA_FFI", "AUTO").upper()
    if mode == "OFF":
        return ""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = "import jax.ffi; print(jax.ffi.include_dir())"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        if mode == "ON":
            raise RuntimeError("TIEMB_XLA_FFI=ON but jax is not importable:\n" + proc.stderr)
        return ""
    return proc.stdout.strip().splitlines()[-1]


def nlohmann_json_include():
    """The nlohmann/json headers of the ``nlohmann-json`` wheel (a build
    requirement in pyproject.toml, so `pip install .` builds on a machine
    without the system package), or "" where it is not installed (the
    offline GPU machine builds without isolation: the system's copy or
    ``.deps/include``). CMake prefers a system copy found by find_package."""
    try:
        import nlohmann_json
    except ImportError:
        return ""
    d = os.path.join(os.path.dirname(nlohmann_json.__file__), "include")
    return d if os.path.isfile(os.path.join(d, "nlohmann", "json.hpp")) else ""


# Built by CMake beside tiemb._C: the one core both modules load, and the
# TensorFlow op library (only where TensorFlow is importable).
COMPANION_LIBRARIES = ["libtiemb_core.so", "_tiemb_tf_ops.so"]


class CMakeExtension(Extension):
    def __init__(self, name, sourcedir=""):
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if shutil.which("cmake") is None:
            raise RuntimeError("building tiemb needs CMake >= 3.18 on PATH (apt-get install cmake)")
        import pybind11

        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        cfg = "Debug" if self.debug or os.environ.get("DEBUG") else "Release"
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DTIEMB_VERSION={VERSION}",
            f"-DTIEMB_CUDA={os.environ.get('TIEMB_CUDA', 'AUTO')}",
            f"-DTIEMB_REDIS={os.environ.get('TIEMB_REDIS', 'AUTO')}",
        ]
        if os.environ.get("TIEMB_CUDA_ARCHITECTURES"):
            cmake_args.append(f"-DTIEMB_CUDA_ARCHITECTURES={os.environ['TIEMB_CUDA_ARCHITECTURES']}")
        # Always passed, empty without TensorFlow, so a cached value from an
        # earlier build cannot outlive the TensorFlow it came from.
        tf = tensorflow_flags() or ([], [], False)
        cmake_args += [f"-DTIEMB_TF_CFLAGS={' '.join(tf[0])}", f"-DTIEMB_TF_LFLAGS={' '.join(tf[1])}",
                       f"-DTIEMB_TF_CUDA={'ON' if tf[2] else 'OFF'}"]
        # Always passed (empty without jaxlib), for the same reason as TensorFlow's flags.
        cmake_args += [f"-DTIEMB_XLA_FFI={os.environ.get('TIEMB_XLA_FFI', 'AUTO').upper()}",
                       f"-DTIEMB_XLA_FFI_INCLUDE={xla_ffi_include()}"]
        if not os.environ.get("TIEMB_NLOHMANN_JSON_INCLUDE") and nlohmann_json_include():
            cmake_args.append(f"-DTIEMB_NLOHMANN_JSON_INCLUDE={nlohmann_json_include()}")
        if shutil.which("ninja"):
            cmake_args += ["-G", "Ninja"]
        cmake_args += shlex.split(os.environ.get("CMAKE_ARGS", ""))

        build_args = ["--config", cfg]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
            build_args += ["--parallel", str(os.cpu_count() or 1)]

        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", *build_args], cwd=build_temp, check=True)
        missing = [f for f in COMPANION_LIBRARIES[:1] if not (extdir / f).exists()]
        if missing:
            raise RuntimeError(f"the CMake build did not produce {missing} in {extdir}")

    def copy_extensions_to_source(self):
        """Editable installs copy the built modules into the source tree;
        the core library (and the op library) must travel with tiemb._C, whose
        RPATH ($ORIGIN) finds the core beside it."""
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name)).parent
            package_dir = Path(build_py.get_package_dir(ext.name.rpartition(".")[0]))
            for name in COMPANION_LIBRARIES:
                if (built / name).exists():
                    shutil.copyfile(built / name, package_dir / name)


setup(
    version=VERSION,
    ext_modules=[CMakeExtension("tiemb._C")],
    cmdclass={"build_ext": CMakeBuild},
)
