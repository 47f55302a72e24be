using System.Diagnostics;
using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Bench;

/// <summary>In-place op rates on pooled tensors (GB/s of tensor bytes touched), to see what the math costs.</summary>
internal static class Micro
{
    public static void Run(string? modelFolder = null)
    {
        using var noGrad = torch.no_grad();
        if (modelFolder is not null)
        {
            Reads(modelFolder);
        }
        Strategies(1L << 23, experts: 3);
        foreach (var n in new[] { 1L << 18, 1L << 20, 1L << 23 })
        {
            using var a = torch.randn(n);
            using var b = torch.randn(n);
            using var c = torch.empty(n);
            using var h = torch.empty(n, ScalarType.BFloat16);
            Time($"copy_ f32 n={n}", n * 8, () => c.copy_(a));
            Time($"sub_ n={n}", n * 12, () => c.sub_(a));
            Time($"add_(alpha) n={n}", n * 12, () => c.add_(b, alpha: 0.3));
            Time($"bf16->f32 copy_ n={n}", n * 6, () => c.copy_(h));
            Time($"f32->bf16 copy_ n={n}", n * 6, () => h.copy_(c));
            // The engine counts NaN/Inf in every input block it reads (a scan of the block just read, in cache).
            Time($"non-finite count f32 n={n}", n * 4, () => SensMerging.Core.Engine.NonFiniteCount.Float32(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(a.bytes)));
            Time($"non-finite count bf16 n={n}", n * 2, () => SensMerging.Core.Engine.NonFiniteCount.BFloat16(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(h.bytes)));
            using (var v = a.narrow(0, 0, n).view(n))
            {
                Time($"bytes span n={n}", 0, () => _ = v.bytes.Length);
            }
        }
    }

    /// <summary>Positioned reads of 8M-element blocks of a model's largest tensor into a reused tensor (the engine's input path).</summary>
    private static void Reads(string folder)
    {
        using var model = SensMerging.Core.Models.ModelFolder.Open(folder);
        var t = model.Tensors.MaxBy(x => x.ByteLength)!;
        var n = Math.Min(1L << 23, t.ByteLength / t.DType.Size);
        using var target = torch.empty(n, t.DType.RequireScalarType());
        using var f32 = torch.empty(n);
        Time($"read {t.DType} block n={n} into a reused tensor", n * t.DType.Size, () => SensMerging.Core.Models.ModelFolder.ReadInto(t, 0, target));
        Time($"copy_ {t.DType} -> f32 n={n}", n * (4 + t.DType.Size), () => f32.copy_(target));
    }

    /// <summary>
    /// The strategies' CPU kernels on in-memory tensors of each storage dtype (bytes: inputs + output): whole tensors, and
    /// ties streamed in the engine's 256K-element blocks with its statistics pass and merge pass timed apart.
    /// </summary>
    private static void Strategies(long n, int experts)
    {
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var size = dtype == ScalarType.Float32 ? 4 : 2;
            // Experts as fine-tunes are: the base plus a small task vector (so magnitudes crowd into few histogram keys).
            // Each intermediate held by a variable until libtorch is done with it (a temporary's finalizer could free it).
            using var baseWide = torch.randn(n);
            baseWide.mul_(0.02);
            using var baseTensor = baseWide.to(dtype);
            var models = Enumerable.Range(0, experts).Select(_ =>
            {
                using var delta = torch.randn(n);
                delta.mul_(0.001).add_(baseWide);
                return delta.to(dtype);
            }).ToList();
            using var output = torch.empty(n, dtype);
            using var scratch = new NoScratch();
            // bfloat16 also in mergekit's rounding (the default for bf16 inputs): the fused passes.
            foreach (var compute in dtype == ScalarType.BFloat16 ? new[] { ScalarType.Float32, ScalarType.BFloat16 } : [ScalarType.Float32])
            {
                foreach (var strategy in new IMergeStrategy[] { new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies) })
                {
                    var request = Request(strategy, baseTensor, models, output, scratch, compute);
                    Time($"{strategy.Name} kernel {dtype}{Mode(compute)} n={n} experts={experts}", n * size * (experts + 2), () => strategy.Merge(request));
                }
                ElementwiseItems(baseTensor, models, output, scratch, size, compute);
                foreach (var variant in new[] { TaskArithmeticVariant.Ties, TaskArithmeticVariant.DareTies })
                {
                    Streamed(variant, baseTensor, models, output, scratch, size, compute);
                }
            }
            models.ForEach(m => m.Dispose());
        }
    }

    /// <summary>The engine's block size.</summary>
    private const long Block = 1L << 18;

    /// <summary>task_arithmetic over the tensor as the engine hands an elementwise strategy its items: one request per block.</summary>
    private static void ElementwiseItems(Tensor baseTensor, List<Tensor> models, Tensor output, NoScratch scratch, int size, ScalarType compute)
    {
        var strategy = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic);
        var first = Request(strategy, baseTensor, models, output, scratch, compute);
        var requests = Blocks(first);
        Time($"task_arithmetic {baseTensor.dtype}{Mode(compute)}: one request per block of {Block}", baseTensor.numel() * size * (models.Count + 2), () => requests.ForEach(strategy.Merge));
        DisposeViews(requests);
    }

    /// <summary>A streaming variant's session over the tensor in blocks: its statistics passes and its merge pass timed apart.</summary>
    private static void Streamed(TaskArithmeticVariant variant, Tensor baseTensor, List<Tensor> models, Tensor output, NoScratch scratch, int size, ScalarType compute)
    {
        var strategy = new GeneralizedTaskArithmeticStrategy(variant);
        var n = baseTensor.numel();
        var first = Request(strategy, baseTensor, models, output, scratch, compute);
        var blocks = Blocks(first);
        ITensorMergeSession? session = null;
        void Statistics()
        {
            session?.Dispose();
            session = strategy.BeginTensor(SensMerging.Strategies.Common.WholeTensor.Info(first));
            for (var pass = 0; session.BeginPass(pass); pass++)
            {
                blocks.ForEach(session.Observe);
            }
        }
        var dtype = baseTensor.dtype;
        Time($"{variant.Name} streamed {dtype}{Mode(compute)}: statistics passes, blocks of {Block}", n * size * (models.Count + 1), Statistics);
        Time($"{variant.Name} streamed {dtype}{Mode(compute)}: merge pass, blocks of {Block}", n * size * (models.Count + 2), () => blocks.ForEach(session!.Merge));
        session?.Dispose();
        DisposeViews(blocks);
    }

    private static string Mode(ScalarType compute) => compute == ScalarType.Float32 ? string.Empty : " (bf16 rounding)";

    /// <summary><paramref name="whole"/> cut into requests of <see cref="Block"/> elements (views of its tensors).</summary>
    private static List<MergeTensorRequest> Blocks(MergeTensorRequest whole)
    {
        var n = whole.Output.numel();
        var blocks = new List<MergeTensorRequest>();
        for (var start = 0L; start < n; start += Block)
        {
            var count = Math.Min(Block, n - start);
            blocks.Add(whole with
            {
                Base = whole.Base!.narrow(0, start, count),
                Models = [.. whole.Models.Select(m => m.narrow(0, start, count))],
                Output = whole.Output.narrow(0, start, count),
                ElementStart = start,
            });
        }
        return blocks;
    }

    private static void DisposeViews(List<MergeTensorRequest> blocks)
    {
        foreach (var b in blocks)
        {
            b.Base!.Dispose();
            b.Output.Dispose();
            foreach (var m in b.Models)
            {
                m.Dispose();
            }
        }
    }

    private static MergeTensorRequest Request(IMergeStrategy strategy, Tensor baseTensor, List<Tensor> models, Tensor output, ITensorScratch scratch, ScalarType compute)
    {
        var global = new Dictionary<string, object> { ["lambda"] = 1.0, ["density"] = 0.5, ["normalize"] = true, ["rescale"] = true };
        return new MergeTensorRequest
        {
            TensorName = "model.layers.0.mlp.up_proj.weight",
            LayerGroup = "model.layers.0",
            Base = baseTensor,
            Models = models,
            ModelNames = [.. models.Select((_, i) => "e" + i)],
            Weights = [.. models.Select(_ => 0.4)],
            // What a host hands the strategy for these values (declared defaults, kinds and ranges applied).
            Parameters = ParameterResolver.ResolveDirect(strategy, models.Count, strategy.Name == "task_arithmetic" ? new Dictionary<string, object> { ["lambda"] = 1.0 } : global),
            Output = output,
            Scratch = scratch,
            Seed = 1,
            TensorSeed = 1,
            ComputeDType = compute,
        };
    }

    private sealed class NoScratch : ITensorScratch, IDisposable
    {
        private readonly List<Tensor> _rented = [];

        public Tensor Rent(ScalarType dtype = ScalarType.Float32) => throw new InvalidOperationException("the fused kernels rent nothing");

        public Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32)
        {
            var t = torch.empty(shape, dtype);
            _rented.Add(t);
            return t;
        }

        public void Dispose() => _rented.ForEach(t => t.Dispose());
    }

    /// <summary>The fastest of the runs in about a second (at least five): the op's cost with the least interference from a shared machine.</summary>
    private static void Time(string what, long bytes, Action op)
    {
        op();
        var total = Stopwatch.StartNew();
        var best = double.MaxValue;
        var reps = 0;
        while (reps < 5 || total.Elapsed.TotalSeconds < 1.0)
        {
            var clock = Stopwatch.StartNew();
            op();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
            reps++;
        }
        Console.WriteLine($"{what}: {best * 1e3:F3} ms (fastest of {reps}){(bytes > 0 ? $", {bytes / best / 1e9:F2} GB/s" : string.Empty)}");
    }
}
