using SensMerging.Abstractions;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Tests;

public sealed class EngineTests : IDisposable
{
    private readonly SafeTensorsTempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("F32", 1)]
    [InlineData("BF16", 2)]
    [InlineData("F16", 2)]
    public void Merge_equals_an_independent_computation(string dtypeName, int parallelism)
    {
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var (basePath, baseValues) = TinyModels.Make(_dir.File("base"), 1, dtype);
        var (e1Path, e1) = TinyModels.Make(_dir.File("e1"), 2, dtype, shardBytes: 600);
        var (e2Path, e2) = TinyModels.Make(_dir.File("e2"), 3, dtype);
        var weights = new[] { 0.7, -0.2 };
        var plan = WeightedSum(basePath, e1Path, e2Path, weights);
        var progress = new List<MergeProgress>();
        var result = new MergeEngine().Run(plan, Options("out") with { MaxParallelism = parallelism, ProgressInterval = TimeSpan.Zero }, new SyncProgress(progress.Add));

        Assert.Equal(TinyModels.Llama.Length, result.TensorCount);
        using var merged = ModelFolder.Open(result.OutputPath);
        foreach (var (name, _) in TinyModels.Llama)
        {
            var expected = baseValues[name].Select((b, k) => (float)(b + (weights[0] * (e1[name][k] - b)) + (weights[1] * (e2[name][k] - b)))).ToArray();
            using var got = merged.ReadTensor(name);
            Assert.Equal(ScalarType.Float32, got.dtype);
            var actual = got.data<float>().ToArray();
            for (var k = 0; k < expected.Length; k++)
            {
                Assert.True(Math.Abs(expected[k] - actual[k]) <= 1e-5f * (1 + Math.Abs(expected[k])), $"{name}[{k}]: {actual[k]} != {expected[k]}");
            }
        }
        Assert.Equal("float32", merged.Config!.TorchDtype);
        Assert.Equal("{\"seed\":1}", File.ReadAllText(Path.Combine(result.OutputPath, "tokenizer.json")));
        var card = File.ReadAllText(Path.Combine(result.OutputPath, "README.md"));
        Assert.Contains("weighted_sum", card, StringComparison.Ordinal);
        Assert.Contains("| e2 | expert | weight -0.2 |", card, StringComparison.Ordinal);
        Assert.Contains(result.Files, f => f.RelativePath == "model.safetensors" && f.Sha256.Length == 64);
        Assert.Equal(result.Files.Sum(f => f.Size), result.TotalBytes);
        foreach (var f in result.Files)
        {
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(result.OutputPath, f.RelativePath)))), f.Sha256);
        }
        var last = progress[^1];
        Assert.Equal(last.TensorsTotal, last.TensorsDone);
        Assert.Equal(last.BytesTotal, last.BytesWritten);
        Assert.Equal(result.BytesRead, last.BytesRead);
        Assert.Equal(3 * baseValues.Values.Sum(v => (long)v.Length) * dtype.Size, result.BytesRead);
        Assert.Empty(Directory.GetDirectories(_dir.Path, "out.partial-*"));
    }

    [Fact]
    public void Bf16_inputs_larger_than_the_staging_piece_are_widened_at_the_right_offsets()
    {
        // Row blocks of 70001 elements and flat blocks of 150000 / 50003: each spans more than one staging piece (the
        // engine widens BF16 in pieces of 65536 elements) and ends in a partial one.
        (string, long[])[] tensors = [("model.layers.0.w", [3, 70001]), ("model.layers.0.v", [200_003])];
        var (basePath, baseValues) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.BF16, tensors: tensors);
        var (e1Path, e1) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.BF16, tensors: tensors);
        var (e2Path, e2) = TinyModels.Make(_dir.File("e2"), 3, SafeTensorsDType.BF16, tensors: tensors);
        var weights = new[] { 0.7, -0.2 };
        var plan = WeightedSum(basePath, e1Path, e2Path, weights);
        var result = new MergeEngine().Run(plan, Options("out") with { MaxParallelism = 2, BlockElements = 150_000 });
        using var merged = ModelFolder.Open(result.OutputPath);
        foreach (var (name, _) in tensors)
        {
            var expected = baseValues[name].Select((b, k) => (float)(b + (weights[0] * (e1[name][k] - b)) + (weights[1] * (e2[name][k] - b)))).ToArray();
            using var got = merged.ReadTensor(name);
            var actual = got.data<float>().ToArray();
            Assert.Equal(expected.Length, actual.Length);
            for (var k = 0; k < expected.Length; k++)
            {
                Assert.True(Math.Abs(expected[k] - actual[k]) <= 1e-5f * (1 + Math.Abs(expected[k])), $"{name}[{k}]: {actual[k]} != {expected[k]}");
            }
        }
    }

    [Fact]
    public void Output_dtype_defaults_to_the_inputs_and_non_float_tensors_are_copied_from_the_base()
    {
        (string, long[])[] tensors = [("model.layers.0.w", [4, 4]), ("model.position_ids", [4]), ("model.scale", []), ("model.empty", [0, 4])];
        static SafeTensorsDType DtypeOf(string n) => n.EndsWith("position_ids", StringComparison.Ordinal) ? SafeTensorsDType.I32 : SafeTensorsDType.BF16;
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.BF16, tensors: tensors, dtypeOf: DtypeOf);
        var (e1Path, e1) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.BF16, tensors: tensors, dtypeOf: DtypeOf);
        var plan = new MergePlan { Models = [_dir.Input("e1", e1Path)], Base = _dir.Input("base", basePath), Strategy = new WeightedSumStrategy(), Weights = [1.0] };
        var result = new MergeEngine().Run(plan, Options("out"));
        using var merged = ModelFolder.Open(result.OutputPath);
        Assert.Equal(SafeTensorsDType.BF16, merged.GetTensor("model.layers.0.w").DType);
        using var w = merged.ReadTensor("model.layers.0.w");
        using var wf = w.to_type(ScalarType.Float32);
        Assert.Equal(e1["model.layers.0.w"], wf.data<float>().ToArray());
        using (var scale = merged.ReadTensor("model.scale"))
        using (var scaleF = scale.to_type(ScalarType.Float32))
        {
            Assert.Equal(0, scale.Dimensions);
            Assert.Equal(e1["model.scale"][0], scaleF.item<float>());
        }
        Assert.Equal([0L, 4L], merged.GetTensor("model.empty").Shape);
        var ids = merged.GetTensor("model.position_ids");
        Assert.Equal(SafeTensorsDType.I32, ids.DType);
        var expected = new byte[16];
        var actual = new byte[16];
        ModelFolder.ReadBytes(plan.Base!.Folder.GetTensor("model.position_ids"), 0, expected);
        ModelFolder.ReadBytes(ids, 0, actual);
        Assert.Equal(expected, actual);
        Assert.Equal("bfloat16", merged.Config!.TorchDtype);
    }

    [Fact]
    public void Row_blocks_give_the_same_bytes_as_whole_tensors()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.BF16);
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.BF16);
        var (e2Path, _) = TinyModels.Make(_dir.File("e2"), 3, SafeTensorsDType.BF16);
        MergePlan Plan(IMergeStrategy s) => new() { Base = _dir.Input("base", basePath), Models = [_dir.Input("e1", e1Path), _dir.Input("e2", e2Path)], Strategy = s, Weights = [0.3, 0.9] };
        var whole = new WeightedSumStrategy();
        var blocked = new WeightedSumStrategy();
        var a = new MergeEngine().Run(Plan(whole), Options("whole") with { BlockElements = 1 << 20 });
        var b = new MergeEngine().Run(Plan(blocked), Options("blocked") with { BlockElements = 20, MaxParallelism = 2 });
        Assert.All(whole.SeenShapes, s => Assert.True(s.Length == 0 || s[0] is 16 or 8 or 12));
        Assert.Contains(blocked.SeenShapes, s => s.SequenceEqual(new long[] { 2, 8 }));
        Assert.Contains(blocked.SeenShapes, s => s.SequenceEqual(new long[] { 8 }));
        Assert.True(blocked.SeenShapes.Count > whole.SeenShapes.Count);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a.OutputPath, "model.safetensors")), File.ReadAllBytes(Path.Combine(b.OutputPath, "model.safetensors")));
    }

    [Fact]
    public void Non_elementwise_strategies_get_whole_tensors_through_the_shared_large_buffers()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.BF16);
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.BF16);
        var whole = new WeightedSumStrategy(elementwise: false);
        var a = new MergeEngine().Run(new MergePlan { Base = _dir.Input("base", basePath), Models = [_dir.Input("e1", e1Path)], Strategy = whole, Weights = [0.4] },
            Options("whole") with { BlockElements = 20, WholeTensorWorkerElements = 20, MaxParallelism = 2 });
        Assert.Equal(TinyModels.Llama.Select(t => t.Shape).Order(ShapeOrder.Instance), whole.SeenShapes.Order(ShapeOrder.Instance));
        var blocked = new WeightedSumStrategy(elementwise: true);
        var b = new MergeEngine().Run(new MergePlan { Base = _dir.Input("base", basePath), Models = [_dir.Input("e1", e1Path)], Strategy = blocked, Weights = [0.4] },
            Options("blocked") with { BlockElements = 20, MaxParallelism = 1 });
        Assert.Equal(File.ReadAllBytes(Path.Combine(a.OutputPath, "model.safetensors")), File.ReadAllBytes(Path.Combine(b.OutputPath, "model.safetensors")));
    }

    private sealed class ShapeOrder : IComparer<long[]>
    {
        public static readonly ShapeOrder Instance = new();

        public int Compare(long[]? x, long[]? y) => string.CompareOrdinal(string.Join(",", x!), string.Join(",", y!));
    }

    [Fact]
    public void Seeded_runs_are_reproducible_byte_for_byte_and_depend_on_the_seed()
    {
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32);
        MergePlan Plan(long seed) => new() { Models = [_dir.Input("e1", e1Path)], Strategy = new SeededDropStrategy(), Seed = seed };
        var a = new MergeEngine().Run(Plan(7), Options("a") with { BlockElements = 40, MaxParallelism = 2 });
        var b = new MergeEngine().Run(Plan(7), Options("b") with { BlockElements = 40, MaxParallelism = 1 });
        var c = new MergeEngine().Run(Plan(8), Options("c") with { BlockElements = 40 });
        var bytesA = File.ReadAllBytes(Path.Combine(a.OutputPath, "model.safetensors"));
        Assert.Equal(bytesA, File.ReadAllBytes(Path.Combine(b.OutputPath, "model.safetensors")));
        Assert.NotEqual(bytesA, File.ReadAllBytes(Path.Combine(c.OutputPath, "model.safetensors")));
        Assert.Equal(StableSeed.Derive(7, "model.norm.weight", 0), StableSeed.Derive(7, "model.norm.weight", 0));
        Assert.NotEqual(StableSeed.Derive(7, "model.norm.weight", 0), StableSeed.Derive(7, "model.norm.weight", 1));
        Assert.Equal(0xaf63dc4c8601ec8cUL, StableSeed.Fnv1a("a"));
    }

    [Fact]
    public void Sharded_output_has_an_index_and_reads_back()
    {
        var (e1Path, e1) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32);
        var result = new MergeEngine().Run(new MergePlan { Models = [_dir.Input("e1", e1Path)], Strategy = new WeightedSumStrategy() }, Options("out") with { ShardSizeBytes = 1000 });
        Assert.Contains(result.Files, f => f.RelativePath == "model.safetensors.index.json");
        using var merged = ModelFolder.Open(result.OutputPath);
        Assert.True(merged.IsSharded);
        using var t = merged.ReadTensor("lm_head.weight");
        Assert.Equal(e1["lm_head.weight"], t.data<float>().ToArray());
    }

    [Fact]
    public void Missing_tensor_is_a_clear_error_and_writes_nothing()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32, tensors: TinyModels.Llama[..^1]);
        var ex = Fails(new MergePlan { Base = _dir.Input("base", basePath), Models = [_dir.Input("e1", e1Path)], Strategy = new WeightedSumStrategy() });
        Assert.Contains("tensor 'lm_head.weight' of 'base' is missing from model 'e1'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Shape_mismatch_is_a_clear_error_and_writes_nothing()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);
        var other = TinyModels.Llama.Select(t => t.Name == "model.norm.weight" ? (t.Name, new long[] { 9 }) : t).ToArray();
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32, tensors: other);
        var ex = Fails(new MergePlan { Base = _dir.Input("base", basePath), Models = [_dir.Input("e1", e1Path)], Strategy = new WeightedSumStrategy() });
        Assert.Contains("tensor 'model.norm.weight' has shape [8] in 'base' but [9] in 'e1'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Integer_and_floating_point_inputs_of_one_tensor_are_a_clear_error_and_write_nothing()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32, dtypeOf: n => n == "model.norm.weight" ? SafeTensorsDType.I32 : SafeTensorsDType.F32);
        var ex = Fails(new MergePlan { Base = _dir.Input("base", basePath), Models = [_dir.Input("e1", e1Path)], Strategy = new WeightedSumStrategy() });
        Assert.Contains("tensor 'model.norm.weight' has dtype F32 in 'base' but I32 in 'e1'", ex.Message, StringComparison.Ordinal);
        Assert.Single(ex.Problems);
    }

    [Fact]
    public void Inputs_stored_in_different_floating_point_dtypes_are_promoted_as_torch_does()
    {
        var (basePath, b) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.BF16);
        var (e1Path, e1) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F16);
        var (e2Path, e2) = TinyModels.Make(_dir.File("e2"), 3, SafeTensorsDType.BF16);
        var plan = WeightedSum(basePath, e1Path, e2Path, [0.5, 0.25]) with { OutputDType = null };
        var result = new MergeEngine().Run(plan, Options("out"));
        using var merged = ModelFolder.Open(result.OutputPath);
        foreach (var (name, _) in TinyModels.Llama)
        {
            // bfloat16 with float16 computes in float32 (neither holds the other), and nothing is rounded to either.
            Assert.Equal(SafeTensorsDType.F32, merged.Tensors.Single(t => t.Name == name).DType);
            using var got = merged.ReadTensor(name);
            var actual = got.data<float>().ToArray();
            for (var k = 0; k < actual.Length; k++)
            {
                var expected = b[name][k] + (0.5 * (e1[name][k] - b[name][k])) + (0.25 * (e2[name][k] - b[name][k]));
                Assert.True(Math.Abs(expected - actual[k]) <= 1e-6 * (1 + Math.Abs(expected)), $"{name}[{k}]: {actual[k]} != {expected}");
            }
        }
        Assert.Equal(3 * b.Values.Sum(v => (long)v.Length) * 2, result.BytesRead);
    }

    [Theory]
    [InlineData("F32", "BF16", null)]
    [InlineData("F32", "F16", null)]
    [InlineData("BF16", "F16", "F32")]
    [InlineData("F16", "BF16", "F32")]
    [InlineData("BF16", "F32", null)]
    public void The_config_dtype_rounds_every_input_and_is_the_output_dtype_unless_out_dtype_is_set(string stored, string cast, string? output)
    {
        var storedType = SafeTensorsDType.FromHeaderName(stored)!;
        var castType = SafeTensorsDType.FromHeaderName(cast)!;
        var outputType = output is null ? null : SafeTensorsDType.FromHeaderName(output);
        // One value beyond float16's range (65504): a cast to float16 makes it infinite, which is reported as mergekit would compute with it.
        var (path, values) = TinyModels.Make(_dir.File("e1"), 2, storedType, edit: (n, v) => v[0] = n == "model.norm.weight" ? 1e6f : v[0]);
        var plan = new MergePlan { Models = [_dir.Input("e1", path)], Strategy = new WeightedSumStrategy(), Weights = [1.0], CastDType = castType, OutputDType = outputType };
        var result = new MergeEngine().Run(plan, Options("out"));
        using var merged = ModelFolder.Open(result.OutputPath);
        var written = outputType ?? castType;
        Assert.Equal(written.TorchDtypeName, merged.Config!.TorchDtype);
        foreach (var (name, _) in TinyModels.Llama)
        {
            Assert.Equal(written, merged.Tensors.Single(t => t.Name == name).DType);
            using var got = merged.ReadTensor(name);
            using var asFloat = got.to_type(ScalarType.Float32);
            var actual = asFloat.data<float>().ToArray();
            for (var k = 0; k < actual.Length; k++)
            {
                // The identity merge of one input with weight 1 gives the input rounded to the cast dtype, then to the written one.
                var expected = Round(Round(values[name][k], castType), written);
                Assert.True(expected.Equals(actual[k]), $"{name}[{k}]: {actual[k]} != {expected} (stored {values[name][k]})");
            }
        }
        var overflow = castType == SafeTensorsDType.F16 || storedType == SafeTensorsDType.F16; // cast to float16, or stored infinite
        Assert.Equal(overflow, result.Warnings.Any(w => w.Problem == MergeDataProblem.NonFinite && w.InfCount == 1 && w.Tensors.Contains("model.norm.weight")));
    }

    /// <summary>Round to nearest even in <paramref name="dtype"/>, written here from the formats' definitions (not with torch or the engine's converters).</summary>
    private static float Round(float value, SafeTensorsDType dtype)
    {
        if (dtype == SafeTensorsDType.F16)
        {
            return (float)(Half)value;
        }
        if (dtype != SafeTensorsDType.BF16 || float.IsNaN(value))
        {
            return value;
        }
        var bits = BitConverter.SingleToUInt32Bits(value);
        var rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
        return BitConverter.UInt32BitsToSingle(rounded & 0xFFFF0000u);
    }

    [Fact]
    public void Strategy_traits_and_weights_are_checked()
    {
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32);
        var ex = Fails(new MergePlan { Models = [_dir.Input("e1", e1Path)], Strategy = new WeightedSumStrategy(requiresBase: true), Weights = [1, 2] });
        Assert.Contains("needs a base model", ex.Message, StringComparison.Ordinal);
        Assert.Contains("2 weights given for 1 models", ex.Message, StringComparison.Ordinal);
        var e = _dir.Input("e1", e1Path);
        ex = Fails(new MergePlan { Models = [e, e with { Name = "x" }, e with { Name = "y" }, e with { Name = "z" }, e with { Name = "w" }], Strategy = new WeightedSumStrategy() });
        Assert.Contains("takes at most 4 model(s) besides the base, got 5", ex.Message, StringComparison.Ordinal);
        ex = Fails(new MergePlan
        {
            Models = [e],
            Strategy = new WeightedSumStrategy(),
            ParameterResolver = (name, _) => name == "model.norm.weight" ? throw new ArgumentOutOfRangeException(nameof(name), "density 2 is above 1") : ResolvedParameters.Empty,
        });
        Assert.Contains("parameters for tensor 'model.norm.weight'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("density 2 is above 1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Existing_output_is_refused_unless_overwrite()
    {
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32);
        var output = _dir.File("out");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "mine");
        var plan = new MergePlan { Models = [_dir.Input("e1", e1Path)], Strategy = new WeightedSumStrategy() };
        var ex = Assert.Throws<MergeValidationException>(() => new MergeEngine().Run(plan, Options("out")));
        Assert.Contains("already exists and is not empty", ex.Message, StringComparison.Ordinal);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(output, "keep.txt")));
        Assert.Empty(Directory.GetDirectories(_dir.Path, "out.partial-*").Concat(Directory.GetDirectories(_dir.Path, "out.old-*")));

        new MergeEngine().Run(plan, Options("out") with { Overwrite = true });
        Assert.False(File.Exists(Path.Combine(output, "keep.txt")));
        Assert.True(File.Exists(Path.Combine(output, "model.safetensors")));
        Assert.Empty(Directory.GetDirectories(_dir.Path, "out.partial-*").Concat(Directory.GetDirectories(_dir.Path, "out.old-*")));
    }

    [Fact]
    public void Cancellation_leaves_no_output()
    {
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32);
        using var cts = new CancellationTokenSource();
        var plan = new MergePlan { Models = [_dir.Input("e1", e1Path)], Strategy = new WeightedSumStrategy() };
        var progress = new SyncProgress(p =>
        {
            if (p.TensorsDone >= 3)
            {
                cts.Cancel();
            }
        });
        Assert.ThrowsAny<OperationCanceledException>(() => new MergeEngine().Run(plan, Options("out") with { ProgressInterval = TimeSpan.Zero }, progress, cts.Token));
        Assert.False(Directory.Exists(_dir.File("out")));
        Assert.Empty(Directory.GetDirectories(_dir.Path, "out*"));
    }

    [Fact]
    public void Strategy_failure_leaves_no_output()
    {
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32);
        var plan = new MergePlan { Models = [_dir.Input("e1", e1Path)], Strategy = new FailingStrategy() };
        var ex = Assert.Throws<InvalidOperationException>(() => new MergeEngine().Run(plan, Options("out") with { MaxParallelism = 2 }));
        Assert.Equal("boom at model.layers.1.self_attn.q_proj.weight", ex.Message);
        Assert.Empty(Directory.GetDirectories(_dir.Path, "out*"));
    }

    private MergeValidationException Fails(MergePlan plan)
    {
        var ex = Assert.Throws<MergeValidationException>(() => new MergeEngine().Run(plan, Options("out")));
        Assert.Empty(Directory.GetDirectories(_dir.Path, "out*"));
        return ex;
    }

    /// <summary>base + two experts merged by <see cref="WeightedSumStrategy"/> into float32.</summary>
    private MergePlan WeightedSum(string basePath, string e1Path, string e2Path, double[] weights) => new()
    {
        Base = _dir.Input("base", basePath),
        Models = [_dir.Input("e1", e1Path), _dir.Input("e2", e2Path)],
        Strategy = new WeightedSumStrategy(),
        Weights = weights,
        OutputDType = SafeTensorsDType.F32,
    };

    private MergeOptions Options(string name) => new() { OutputPath = _dir.File(name), MaxParallelism = 1 };

    private sealed class SyncProgress(Action<MergeProgress> report) : IProgress<MergeProgress>
    {
        public void Report(MergeProgress value) => report(value);
    }

    private sealed class FailingStrategy : IMergeStrategy
    {
        public string Name => "failing";

        public string Description => "Test strategy.";

        public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

        public StrategyTraits Traits { get; } = new(false);

        public void Merge(MergeTensorRequest request)
        {
            if (request.TensorName == "model.layers.1.self_attn.q_proj.weight")
            {
                throw new InvalidOperationException("boom at " + request.TensorName);
            }
            request.Output.copy_(request.Models[0]);
        }
    }
}
