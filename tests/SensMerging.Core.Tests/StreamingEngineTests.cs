using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Tests;

/// <summary>Streaming strategies (<see cref="IStreamingMergeStrategy"/>) merged in blocks by the engine.</summary>
public sealed class StreamingEngineTests : IDisposable
{
    private readonly SafeTensorsTempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("ties", "F32")]
    [InlineData("ties", "BF16")]
    [InlineData("breadcrumbs_ties", "F32")]
    [InlineData("breadcrumbs_ties", "BF16")]
    [InlineData("dare_ties", "F32")]
    [InlineData("dare_ties", "BF16")]
    public void Streamed_in_tiny_blocks_equals_the_whole_tensor_merge(string method, string dtypeName)
    {
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        IStreamingMergeStrategy strategy = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.All.Single(v => v.Name == method));
        // gamma is breadcrumbs' own parameter: ties and DARE (its L1 rescale on, mergekit's default) would refuse it, as a host does.
        Dictionary<string, object> Model(double density, double gamma) =>
            method == "breadcrumbs_ties" ? new() { ["density"] = density, ["gamma"] = gamma } : new() { ["density"] = density };
        var parameters = ParameterResolver.ResolveDirect(strategy, 2, new Dictionary<string, object> { ["lambda"] = 0.9 }, [Model(0.5, 0.05), Model(0.3, 0.1)]);
        MergePlan Plan(IMergeStrategy s, string tag) => new()
        {
            Base = _dir.Input("base", TinyModels.Make(_dir.File("base" + tag), 1, dtype).Path),
            Models = [_dir.Input("e1", TinyModels.Make(_dir.File("e1" + tag), 2, dtype).Path), _dir.Input("e2", TinyModels.Make(_dir.File("e2" + tag), 3, dtype).Path)],
            Strategy = s,
            ParameterResolver = (_, _) => parameters,
            Weights = [0.8, -0.3],
        };

        // Block of 5 elements: rows of 8 do not fit, so tensors stream as flat ranges not aligned to vectors.
        // BF16 inputs compute in mergekit's bfloat16 rounding by default: those tensors stream too (StreamsBFloat16Rounding).
        var streamedOnly = new StreamedOnly(strategy);
        var streamed = new MergeEngine().Run(Plan(streamedOnly, "s"), new MergeOptions { OutputPath = _dir.File("streamed"), MaxParallelism = 2, BlockElements = 5 });
        Assert.Equal([dtype == SafeTensorsDType.BF16 ? ScalarType.BFloat16 : ScalarType.Float32], streamedOnly.ComputeDTypes.Distinct());
        var whole = new MergeEngine().Run(Plan(new WholeTensorOnly(strategy), "w"), new MergeOptions { OutputPath = _dir.File("whole"), MaxParallelism = 1 });

        using var a = ModelFolder.Open(streamed.OutputPath);
        using var b = ModelFolder.Open(whole.OutputPath);
        foreach (var (name, _) in TinyModels.Llama)
        {
            using var x = a.ReadTensor(name);
            using var y = b.ReadTensor(name);
            Assert.Equal(y.bytes.ToArray(), x.bytes.ToArray());
        }
        Assert.Equal(whole.BytesRead, streamed.BytesRead);
    }

    [Theory]
    [InlineData("F16", "ties", false)]
    [InlineData("BF16", "dare_ties", true)]
    [InlineData("BF16", "ties", true)]
    public void Half_precision_tensors_stream_only_in_bfloat16_where_the_strategy_declares_it(string dtypeName, string method, bool streams)
    {
        // float16 keeps the whole-tensor libtorch path; in bfloat16 ties and dare_ties (its L1 rescale's norms summed block
        // by block) declare StreamsBFloat16Rounding.
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var strategy = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.All.Single(v => v.Name == method));
        var counted = new CountedCalls(strategy);
        var parameters = ParameterResolver.ResolveDirect(strategy, 2, new Dictionary<string, object>(), [new Dictionary<string, object> { ["density"] = 0.5 }, new Dictionary<string, object> { ["density"] = 0.5 }]);
        new MergeEngine().Run(new MergePlan
        {
            Base = _dir.Input("base", TinyModels.Make(_dir.File("base"), 1, dtype).Path),
            Models = [_dir.Input("e1", TinyModels.Make(_dir.File("e1"), 2, dtype).Path), _dir.Input("e2", TinyModels.Make(_dir.File("e2"), 3, dtype).Path)],
            Strategy = counted,
            ParameterResolver = (_, _) => parameters,
        }, new MergeOptions { OutputPath = _dir.File("out"), MaxParallelism = 1, BlockElements = 5 });
        Assert.Equal(streams ? 0 : TinyModels.Llama.Length, counted.WholeTensors);
        Assert.Equal(streams ? TinyModels.Llama.Length : 0, counted.Sessions);
    }

    [Theory]
    [InlineData("F32")]
    [InlineData("BF16")]
    public void Two_workers_finishing_out_of_order_write_the_same_bytes_and_shard_hashes_as_one(string dtypeName)
    {
        // Streamed tensors of many blocks are dispatched first (largest first) and outputs land at their file offsets as
        // they finish, across several shards; the files and SHA-256s must equal a one-worker run's and the bytes on disk.
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var parameters = ParameterResolver.ResolveDirect(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), 2,
            new Dictionary<string, object> { ["lambda"] = 1.0 },
            [new Dictionary<string, object> { ["density"] = 0.5 }, new Dictionary<string, object> { ["density"] = 0.4 }]);
        MergePlan Plan(string tag) => new()
        {
            Base = _dir.Input("base", TinyModels.Make(_dir.File("base" + tag), 4, dtype).Path),
            Models = [_dir.Input("e1", TinyModels.Make(_dir.File("e1" + tag), 5, dtype).Path), _dir.Input("e2", TinyModels.Make(_dir.File("e2" + tag), 6, dtype).Path)],
            Strategy = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties),
            ParameterResolver = (_, _) => parameters,
            Weights = [0.6, 0.4],
        };
        MergeResult Merge(string tag, int workers) => new MergeEngine().Run(Plan(tag), new MergeOptions
        {
            OutputPath = _dir.File("out" + tag),
            MaxParallelism = workers,
            BlockElements = 16,
            ShardSizeBytes = 300,
        });
        var one = Merge("1", 1);
        var two = Merge("2", 2);
        // Weights and index (the model card names the output folder, which differs).
        static IEnumerable<MergedFile> Weights(MergeResult r) => r.Files.Where(f => f.RelativePath.Contains(".safetensors", StringComparison.Ordinal));
        Assert.True(Weights(one).Count() > 3);
        Assert.Equal(Weights(one).Select(f => (f.RelativePath, f.Size, f.Sha256)), Weights(two).Select(f => (f.RelativePath, f.Size, f.Sha256)));
        foreach (var f in Weights(two))
        {
            var bytes = File.ReadAllBytes(Path.Combine(two.OutputPath, f.RelativePath));
            Assert.Equal(File.ReadAllBytes(Path.Combine(one.OutputPath, f.RelativePath)), bytes);
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)), f.Sha256);
        }
    }

    [Theory]
    [InlineData("F32")]
    [InlineData("BF16")]
    public void Dare_drops_do_not_depend_on_the_block_size(string dtypeName)
    {
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var parameters = ParameterResolver.ResolveDirect(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies), 2,
            new Dictionary<string, object> { ["lambda"] = 1.0, ["normalize"] = true },
            [new Dictionary<string, object> { ["density"] = 0.5 }, new Dictionary<string, object> { ["density"] = 0.3 }]);
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, dtype);
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, dtype);
        var (e2Path, _) = TinyModels.Make(_dir.File("e2"), 3, dtype);
        MergeResult Run(string name, long block) => new MergeEngine().Run(new MergePlan
        {
            Base = _dir.Input("base", basePath),
            Models = [_dir.Input("e1", e1Path), _dir.Input("e2", e2Path)],
            Strategy = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies),
            ParameterResolver = (_, _) => parameters,
            Weights = [0.8, 0.6],
            Seed = 42,
        }, new MergeOptions { OutputPath = _dir.File(name), MaxParallelism = 2, BlockElements = block });

        var small = Run("blocks-7", 7);
        var large = Run("blocks-64", 64);
        var whole = Run("whole", 1 << 20);
        using var a = ModelFolder.Open(small.OutputPath);
        using var b = ModelFolder.Open(large.OutputPath);
        using var c = ModelFolder.Open(whole.OutputPath);
        using var inputBase = ModelFolder.Open(basePath);
        var dropped = 0;
        foreach (var (name, _) in TinyModels.Llama)
        {
            using var x = a.ReadTensor(name);
            using var y = b.ReadTensor(name);
            using var z = c.ReadTensor(name);
            Assert.Equal(z.bytes.ToArray(), x.bytes.ToArray());
            Assert.Equal(z.bytes.ToArray(), y.bytes.ToArray());
            using var baseTensor = inputBase.ReadTensor(name);
            dropped += (int)z.eq(baseTensor).sum().item<long>();
        }
        // The drops happened (entries where every expert's delta was dropped keep the base value).
        Assert.True(dropped > 0);
    }

    [Fact]
    public void Sessions_see_every_block_in_order_in_each_pass_and_outputs_land_in_place()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.F32);
        var strategy = new PositionStrategy(passes: 2);
        var result = new MergeEngine().Run(new MergePlan
        {
            Base = _dir.Input("base", basePath),
            Models = [_dir.Input("e1", e1Path)],
            Strategy = strategy,
            Seed = 7,
        }, new MergeOptions { OutputPath = _dir.File("out"), MaxParallelism = 2, BlockElements = 24 });

        using var merged = ModelFolder.Open(result.OutputPath);
        foreach (var (name, shape) in TinyModels.Llama)
        {
            var n = shape.Aggregate(1L, (p, d) => p * d);
            using var t = merged.ReadTensor(name);
            Assert.Equal(Enumerable.Range(0, (int)n).Select(i => (float)i), t.data<float>().ToArray());
            var calls = strategy.Calls[name];
            var blocks = (int)((n + 23) / 24);
            // rows of 8 elements: blocks of 3 rows (24 elements); 2 statistics passes, then the merge pass.
            Assert.Equal(3 * blocks, calls.Count);
            for (var pass = 0; pass < 3; pass++)
            {
                var starts = calls.Skip(pass * blocks).Take(blocks).ToList();
                Assert.All(starts, c => Assert.Equal(pass, c.Pass));
                Assert.Equal(Enumerable.Range(0, blocks).Select(k => k * 24L), starts.Select(c => c.Start));
            }
            Assert.Single(strategy.Seeds[name]);
        }
    }

    [Fact]
    public void Bf16_output_is_rounded_as_libtorch_rounds()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.BF16);
        var (e1Path, e1) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.BF16);
        var result = new MergeEngine().Run(new MergePlan
        {
            Base = _dir.Input("base", basePath),
            Models = [_dir.Input("e1", e1Path)],
            Strategy = new ScaleStrategy(),
        }, new MergeOptions { OutputPath = _dir.File("out"), MaxParallelism = 1 });

        using var merged = ModelFolder.Open(result.OutputPath);
        foreach (var (name, _) in TinyModels.Llama)
        {
            using var expected = torch.tensor(e1[name]).mul_(ScaleStrategy.Factor);
            expected[0] = torch.tensor(float.NaN);
            using var rounded = expected.to_type(ScalarType.BFloat16);
            using var got = merged.ReadTensor(name);
            Assert.Equal(ScalarType.BFloat16, got.dtype);
            Assert.Equal(rounded.bytes.ToArray(), got.bytes.ToArray());
        }
    }

    [Theory]
    [InlineData("ties")]
    [InlineData("dare_ties")]
    [InlineData("breadcrumbs_ties")]
    public void Bf16_models_merged_as_stored_give_the_bytes_of_the_float32_path(string method)
    {
        // Strategies that accept bfloat16 get the BF16 inputs as stored (no widening, no output conversion); the files
        // must be byte for byte those of the same merge through float32 buffers, streamed in blocks across two workers.
        IStreamingMergeStrategy strategy = method switch
        {
            "ties" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties),
            "dare_ties" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies),
            _ => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.BreadcrumbsTies),
        };
        Assert.True(strategy.Traits.AcceptsBFloat16);
        Dictionary<string, object> Model(double density, double gamma) =>
            method == "breadcrumbs_ties" ? new() { ["density"] = density, ["gamma"] = gamma } : new() { ["density"] = density };
        var parameters = ParameterResolver.ResolveDirect(strategy, 2,
            new Dictionary<string, object> { ["lambda"] = 0.9, ["normalize"] = true }, [Model(0.6, 0.05), Model(0.4, 0.1)]);
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.BF16);
        var (e1Path, _) = TinyModels.Make(_dir.File("e1"), 2, SafeTensorsDType.BF16);
        var (e2Path, _) = TinyModels.Make(_dir.File("e2"), 3, SafeTensorsDType.BF16);
        MergeResult Run(IMergeStrategy s, string name, SafeTensorsDType? outputDType = null) => new MergeEngine().Run(new MergePlan
        {
            Base = _dir.Input("base", basePath),
            Models = [_dir.Input("e1", e1Path), _dir.Input("e2", e2Path)],
            Strategy = s,
            ParameterResolver = (_, _) => parameters,
            Weights = [0.7, -0.4],
            Seed = 5,
            OutputDType = outputDType,
        }, new MergeOptions { OutputPath = _dir.File(name), MaxParallelism = 2, BlockElements = 5 });

        var asStored = new DtypeRecorder(strategy, acceptsBFloat16: true);
        var throughFloat = new DtypeRecorder(strategy, acceptsBFloat16: false);
        var stored = Run(asStored, "stored");
        var widened = Run(throughFloat, "widened");
        Assert.Equal([ScalarType.BFloat16], asStored.Seen);
        Assert.Equal([ScalarType.Float32], throughFloat.Seen);
        using (var a = ModelFolder.Open(stored.OutputPath))
        using (var b = ModelFolder.Open(widened.OutputPath))
        {
            foreach (var (name, _) in TinyModels.Llama)
            {
                using var x = a.ReadTensor(name);
                using var y = b.ReadTensor(name);
                Assert.Equal(ScalarType.BFloat16, x.dtype);
                Assert.Equal(y.bytes.ToArray(), x.bytes.ToArray());
            }
        }

        // A float32 output is not bfloat16 as stored: the strategy gets float32 again.
        var toFloat = new DtypeRecorder(strategy, acceptsBFloat16: true);
        Run(toFloat, "f32-out", SafeTensorsDType.F32);
        Assert.Equal([ScalarType.Float32], toFloat.Seen);
    }

    /// <summary>Hides the streaming interface, so the engine hands the strategy whole tensors.</summary>
    private sealed class WholeTensorOnly(IMergeStrategy inner) : IMergeStrategy
    {
        public string Name => inner.Name;

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public StrategyTraits Traits => inner.Traits;

        public void Merge(MergeTensorRequest request) => inner.Merge(request);
    }

    /// <summary>A streaming strategy that refuses whole tensors, recording the compute dtypes its sessions are told.</summary>
    private sealed class StreamedOnly(IStreamingMergeStrategy inner) : IStreamingMergeStrategy
    {
        public System.Collections.Concurrent.ConcurrentBag<ScalarType> ComputeDTypes { get; } = [];

        public string Name => inner.Name;

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public StrategyTraits Traits => inner.Traits;

        public void Merge(MergeTensorRequest request) => throw new InvalidOperationException($"'{request.TensorName}' was not streamed");

        public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
        {
            ComputeDTypes.Add(tensor.ComputeDType);
            return inner.BeginTensor(tensor);
        }
    }

    /// <summary>Counts whole-tensor merges and sessions, passing both through.</summary>
    private sealed class CountedCalls(IStreamingMergeStrategy inner) : IStreamingMergeStrategy
    {
        private int _wholeTensors;
        private int _sessions;

        public int WholeTensors => _wholeTensors;

        public int Sessions => _sessions;

        public string Name => inner.Name;

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public StrategyTraits Traits => inner.Traits;

        public void Merge(MergeTensorRequest request)
        {
            Interlocked.Increment(ref _wholeTensors);
            inner.Merge(request);
        }

        public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
        {
            Interlocked.Increment(ref _sessions);
            return inner.BeginTensor(tensor);
        }
    }

    /// <summary>Records the protocol calls; its output is each element's index in the whole tensor.</summary>
    private sealed class PositionStrategy(int passes) : IStreamingMergeStrategy
    {
        public Dictionary<string, List<(int Pass, long Start)>> Calls { get; } = [];

        public Dictionary<string, HashSet<long>> Seeds { get; } = [];

        public string Name => "position";

        public string Description => "Test strategy.";

        public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

        public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, Elementwise: false);

        public void Merge(MergeTensorRequest request) => throw new InvalidOperationException("a streaming strategy got a whole tensor");

        public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
        {
            lock (Calls)
            {
                Calls[tensor.TensorName] = [];
                Seeds[tensor.TensorName] = [tensor.Seed];
            }
            return new Session(this, tensor, passes);
        }

        private sealed class Session(PositionStrategy owner, MergeTensorInfo tensor, int passes) : ITensorMergeSession
        {
            private int _pass = -1;

            public bool BeginPass(int pass)
            {
                Assert.Equal(_pass + 1, pass);
                _pass = pass;
                return pass < passes;
            }

            public void Observe(MergeTensorRequest block) => Record(block);

            public void Merge(MergeTensorRequest block)
            {
                Assert.Equal(passes, _pass);
                Record(block);
                using var positions = torch.arange(block.ElementStart, block.ElementStart + block.Output.numel(), dtype: ScalarType.Float32);
                using var shaped = positions.view(block.Output.shape);
                block.Output.copy_(shaped);
            }

            public void Dispose()
            {
            }

            private void Record(MergeTensorRequest block)
            {
                lock (owner.Calls)
                {
                    owner.Calls[tensor.TensorName].Add((_pass, block.ElementStart));
                    owner.Seeds[tensor.TensorName].Add(block.Seed);
                }
            }
        }
    }

    /// <summary>
    /// Streams through <paramref name="inner"/>, declaring bfloat16 acceptance as told, and records the dtypes of every
    /// tensor of every block it is handed.
    /// </summary>
    private sealed class DtypeRecorder(IStreamingMergeStrategy inner, bool acceptsBFloat16) : IStreamingMergeStrategy
    {
        private readonly HashSet<ScalarType> _seen = [];

        public IReadOnlyCollection<ScalarType> Seen => _seen;

        public string Name => inner.Name;

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public StrategyTraits Traits => inner.Traits with { AcceptsBFloat16 = acceptsBFloat16 };

        public void Merge(MergeTensorRequest request)
        {
            Record(request);
            inner.Merge(request);
        }

        public ITensorMergeSession BeginTensor(MergeTensorInfo tensor) => new Session(this, inner.BeginTensor(tensor));

        private void Record(MergeTensorRequest request)
        {
            lock (_seen)
            {
                foreach (var t in request.Models.Append(request.Output).Append(request.Base!))
                {
                    _seen.Add(t.dtype);
                }
            }
        }

        private sealed class Session(DtypeRecorder owner, ITensorMergeSession inner) : ITensorMergeSession
        {
            public bool BeginPass(int pass) => inner.BeginPass(pass);

            public void Observe(MergeTensorRequest block)
            {
                owner.Record(block);
                inner.Observe(block);
            }

            public void Merge(MergeTensorRequest block)
            {
                owner.Record(block);
                inner.Merge(block);
            }

            public void Dispose() => inner.Dispose();
        }
    }

    /// <summary>Output = first model x <see cref="Factor"/>, element 0 NaN (elementwise, whole tensors here).</summary>
    private sealed class ScaleStrategy : IMergeStrategy
    {
        public const float Factor = 1.37f;

        public string Name => "scale";

        public string Description => "Test strategy.";

        public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

        public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, Elementwise: true);

        public void Merge(MergeTensorRequest request)
        {
            request.Output.copy_(request.Models[0]).mul_(Factor);
            using var flat = request.Output.view(-1);
            flat[0] = torch.tensor(float.NaN);
        }
    }
}
