using System.IO.Compression;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.PyTorch;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Tests.PyTorch;

/// <summary>PyTorch <c>.bin</c> checkpoints as merge inputs, with fixtures written by PyTorch's own <c>torch.save</c>.</summary>
public sealed class PyTorchCheckpointTests : IDisposable
{
    private readonly SafeTensorsTempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [TorchTheory]
    [InlineData("F32")]
    [InlineData("BF16")]
    [InlineData("F16")]
    public void Bin_checkpoints_merge_to_the_same_bytes_as_their_safetensors_twins(string dtypeName)
    {
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var (basePath, _) = TinyModels.Make(_dir.File("st-base"), 1, dtype);
        var (e1Path, _) = TinyModels.Make(_dir.File("st-e1"), 2, dtype, shardBytes: 600);
        var (e2Path, _) = TinyModels.Make(_dir.File("st-e2"), 3, dtype);
        // The base as one file, e1 in three shards with an index, e2 stored as views (non-contiguous, at a storage offset, shared storages).
        TorchPython.Run("bin", basePath, _dir.File("bin-base"));
        TorchPython.Run("bin", e1Path, _dir.File("bin-e1"), "--shards", "3", "--views");
        TorchPython.Run("bin", e2Path, _dir.File("bin-e2"), "--views");
        Assert.False(File.Exists(Path.Combine(_dir.File("bin-e1"), "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(_dir.File("bin-e1"), "pytorch_model-00003-of-00003.bin")));

        foreach (var (st, bin) in new[] { (basePath, "bin-base"), (e1Path, "bin-e1"), (e2Path, "bin-e2") })
        {
            using var a = ModelFolder.Open(st);
            using var b = ModelFolder.Open(_dir.File(bin));
            Assert.Equal(a.Tensors.Select(t => (t.Name, t.DType, TensorShape.Format(t.Shape))), b.Tensors.Select(t => (t.Name, t.DType, TensorShape.Format(t.Shape))));
            foreach (var t in a.Tensors)
            {
                var expected = new byte[t.ByteLength];
                var actual = new byte[t.ByteLength];
                ModelFolder.ReadBytes(t, 0, expected);
                ModelFolder.ReadBytes(b.GetTensor(t.Name), 0, actual);
                Assert.True(expected.AsSpan().SequenceEqual(actual), $"{bin}: tensor {t.Name} differs");
            }
        }
        using (var views = PyTorchCheckpoint.Open(Path.Combine(_dir.File("bin-e2"), "pytorch_model.bin")))
        {
            Assert.Contains(views.Tensors, t => !t.IsContiguous);
            Assert.Contains(views.Tensors, t => t.StorageOffset > 0);
            Assert.True(views.Tensors.Select(t => t.StorageKey).Distinct().Count() < views.Tensors.Count, "no two tensors share a storage");
        }
        using (var sharded = ModelFolder.Open(_dir.File("bin-e1")))
        {
            Assert.True(sharded.IsSharded);
            Assert.Equal(3, sharded.WeightFiles.Count);
        }

        var fromSafeTensors = Merge("out-st", basePath, e1Path, e2Path, blockElements: 1 << 20);
        var fromBin = Merge("out-bin", _dir.File("bin-base"), _dir.File("bin-e1"), _dir.File("bin-e2"), blockElements: 7);
        Assert.Equal(
            fromSafeTensors.Files.Where(f => f.RelativePath.EndsWith(".safetensors", StringComparison.Ordinal)).Select(f => (f.RelativePath, f.Sha256)),
            fromBin.Files.Where(f => f.RelativePath.EndsWith(".safetensors", StringComparison.Ordinal)).Select(f => (f.RelativePath, f.Sha256)));
        Assert.Contains(fromBin.Files, f => f.RelativePath == "model.safetensors");
        Assert.DoesNotContain(fromBin.Files, f => f.RelativePath.EndsWith(".bin", StringComparison.Ordinal));
    }

    [TorchFact]
    public void A_pickle_naming_os_system_is_refused_before_anything_runs()
    {
        var model = _dir.File("evil");
        Directory.CreateDirectory(model);
        File.WriteAllText(Path.Combine(model, "config.json"), "{}");
        var marker = _dir.File("ran");
        TorchPython.Run("evil", Path.Combine(model, "pytorch_model.bin"), marker);

        var ex = Assert.Throws<PyTorchCheckpointException>(() => ModelFolder.Open(model));
        Assert.Contains("names the global 'posix.system'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("nothing in it was run", ex.Message, StringComparison.Ordinal);
        Assert.Contains("pytorch_model.bin", ex.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(marker), "the payload ran");

        // The fixture is live: PyTorch's own unpickler runs the payload.
        var (code, output) = TorchPython.Exec("-c", $"import torch; torch.load({PyString(Path.Combine(model, "pytorch_model.bin"))})");
        Assert.True(code == 0, output);
        Assert.True(File.Exists(marker), "torch.load did not run the fixture's payload, so the refusal above proves nothing");
    }

    [TorchFact]
    public void Legacy_format_truncated_files_and_missing_storages_are_clear_errors()
    {
        var legacy = _dir.File("legacy.bin");
        TorchPython.Run("legacy", legacy);
        var ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(legacy));
        Assert.Contains("legacy (pre-1.6, non-zip) format", ex.Message, StringComparison.Ordinal);

        var (basePath, _) = TinyModels.Make(_dir.File("st"), 1, SafeTensorsDType.F32);
        TorchPython.Run("bin", basePath, _dir.File("bin"));
        var good = Path.Combine(_dir.File("bin"), "pytorch_model.bin");

        var stripped = _dir.File("stripped.bin");
        TorchPython.Run("strip-storage", good, stripped);
        ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(stripped));
        Assert.Matches("tensor '[^']+': its storage '[^']+/data/0' is missing from the archive", ex.Message);

        var bytes = File.ReadAllBytes(good);
        var truncated = _dir.File("truncated.bin");
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(truncated));
        Assert.Contains("not a complete zip archive", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Files_that_are_not_checkpoints_are_clear_errors()
    {
        var text = _dir.File("text.bin");
        File.WriteAllText(text, "hello, not a checkpoint");
        var ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(text));
        Assert.Contains("not a PyTorch checkpoint (it is not a zip archive)", ex.Message, StringComparison.Ordinal);

        var noPickle = WriteZip("nopickle.bin", ("archive/data/0", [1, 2, 3, 4]));
        ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(noPickle));
        Assert.Contains("no '<name>/data.pkl' entry", ex.Message, StringComparison.Ordinal);

        var deflated = _dir.File("deflated.bin");
        using (var zip = ZipFile.Open(deflated, ZipArchiveMode.Create))
        {
            using var s = zip.CreateEntry("archive/data.pkl", CompressionLevel.SmallestSize).Open();
            s.Write(new byte[1000]);
        }
        ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(deflated));
        Assert.Contains("zip entry 'archive/data.pkl' is compressed", ex.Message, StringComparison.Ordinal);

        var notDict = WriteZip("list.bin", ("archive/data.pkl", [0x80, 0x02, (byte)']', (byte)'.']));
        ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(notDict));
        Assert.Contains("not a state dict", ex.Message, StringComparison.Ordinal);

        // A tensor view reaching past its 4-byte storage: _rebuild_tensor_v2(storage, 0, (2,), (1,), False, OrderedDict()).
        var outside = WriteZip("outside.bin", ("archive/data.pkl", StateDictPickle("w", size: 2)), ("archive/data/0", [0, 0, 128, 63]));
        ex = Assert.Throws<PyTorchCheckpointException>(() => PyTorchCheckpoint.Open(outside));
        Assert.Contains("tensor 'w' (offset 0, shape [2], stride [1]) reaches element 1 of a storage of 1 F32 elements", ex.Message, StringComparison.Ordinal);

        var fits = WriteZip("fits.bin", ("archive/data.pkl", StateDictPickle("w", size: 1)), ("archive/data/0", [0, 0, 128, 63]));
        using var checkpoint = PyTorchCheckpoint.Open(fits);
        var w = Assert.Single(checkpoint.Tensors);
        Assert.Equal(("w", SafeTensorsDType.F32, 1L), (w.Name, w.DType, w.ElementCount));
        var value = new byte[4];
        checkpoint.ReadBytes(w, 0, value);
        Assert.Equal(1f, BitConverter.ToSingle(value));
    }

    [Theory]
    [InlineData("builtins", "eval")]
    [InlineData("os", "system")]
    [InlineData("torch", "load")]
    [InlineData("torch._utils", "_rebuild_tensor")]
    public void Any_other_global_is_refused_at_the_opcode_that_names_it(string module, string name)
    {
        // PROTO 2, GLOBAL module name, then bytes that are not a valid continuation: the refusal comes first.
        byte[] pickle = [0x80, 0x02, (byte)'c', .. System.Text.Encoding.ASCII.GetBytes($"{module}\n{name}\n"), 0xff, 0xff];
        var ex = Assert.Throws<PyTorchCheckpointException>(() => RestrictedUnpickler.Load(pickle, "test.pkl"));
        Assert.Contains($"test.pkl: offset 2: the pickle names the global '{module}.{name}'", ex.Message, StringComparison.Ordinal);

        // Protocol 4 spelling: SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL.
        byte[] stackGlobal = [0x80, 0x04, 0x8c, (byte)module.Length, .. System.Text.Encoding.ASCII.GetBytes(module), 0x8c, (byte)name.Length, .. System.Text.Encoding.ASCII.GetBytes(name), 0x93, 0xff];
        ex = Assert.Throws<PyTorchCheckpointException>(() => RestrictedUnpickler.Load(stackGlobal, "test.pkl"));
        Assert.Contains($"names the global '{module}.{name}'", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new byte[] { 0x80, 0x02, 0x8f, (byte)'.' }, "pickle opcode 0x8f ('?') is not one a PyTorch state dict uses")]
    [InlineData(new byte[] { 0x80, 0x02, (byte)'i', (byte)'o', (byte)'s', 10 }, "pickle opcode 0x69 ('i') is not one a PyTorch state dict uses")]
    [InlineData(new byte[] { 0x80, 0x02, (byte)'}', (byte)'X', 9, 0, 0, 0, (byte)'a' }, "runs past the end of the pickle")]
    [InlineData(new byte[] { 0x80, 0x02, (byte)'}' }, "ends in the middle of an opcode")]
    [InlineData(new byte[] { 0x80, 0x02, (byte)'h', 3 }, "memo key 3 was never stored")]
    [InlineData(new byte[] { 0x80, 0x02, (byte)'s' }, "stack underflow")]
    public void Malformed_pickles_are_clear_errors(byte[] pickle, string message)
    {
        var ex = Assert.Throws<PyTorchCheckpointException>(() => RestrictedUnpickler.Load(pickle, "test.pkl"));
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    private MergeResult Merge(string name, string basePath, string e1Path, string e2Path, int blockElements) =>
        new MergeEngine().Run(
            new MergePlan
            {
                Base = _dir.Input("base", basePath),
                Models = [_dir.Input("e1", e1Path), _dir.Input("e2", e2Path)],
                Strategy = new WeightedSumStrategy(),
                Weights = [0.7, -0.2],
            },
            new MergeOptions { OutputPath = _dir.File(name), MaxParallelism = 2, BlockElements = blockElements });

    private string WriteZip(string name, params (string Entry, byte[] Bytes)[] entries)
    {
        var path = _dir.File(name);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var (entry, bytes) in entries)
        {
            using var s = zip.CreateEntry(entry, CompressionLevel.NoCompression).Open();
            s.Write(bytes);
        }
        return path;
    }

    /// <summary>{name: _rebuild_tensor_v2(FloatStorage '0', 0, (size,), (1,), False, OrderedDict())} in protocol 2.</summary>
    private static byte[] StateDictPickle(string name, byte size)
    {
        var bytes = new List<byte> { 0x80, 0x02, (byte)'}', (byte)'X', (byte)name.Length, 0, 0, 0 };
        bytes.AddRange(System.Text.Encoding.ASCII.GetBytes(name));
        bytes.Add((byte)'c');
        bytes.AddRange(System.Text.Encoding.ASCII.GetBytes("torch._utils\n_rebuild_tensor_v2\n"));
        bytes.AddRange([(byte)'(', (byte)'(']);
        bytes.AddRange([(byte)'X', 7, 0, 0, 0, .. "storage"u8.ToArray(), (byte)'c', .. "torch\nFloatStorage\n"u8.ToArray()]);
        bytes.AddRange([(byte)'X', 1, 0, 0, 0, (byte)'0', (byte)'X', 3, 0, 0, 0, .. "cpu"u8.ToArray(), (byte)'K', 1, (byte)'t', (byte)'Q']);
        bytes.AddRange([(byte)'K', 0, (byte)'K', size, 0x85, (byte)'K', 1, 0x85, 0x89]);
        bytes.AddRange([(byte)'c', .. "collections\nOrderedDict\n"u8.ToArray(), (byte)')', (byte)'R', (byte)'t', (byte)'R', (byte)'s', (byte)'.']);
        return [.. bytes];
    }

    private static string PyString(string text) => "'" + text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'";
}
