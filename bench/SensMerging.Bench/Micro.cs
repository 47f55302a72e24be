using System.Diagnostics;
using SensMerging.Abstractions;
using SensMerging.Strategies.DareTies;
using SensMerging.Strategies.TaskArithmetic;
using SensMerging.Strategies.Ties;
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

    /// <summary>The strategies' whole-tensor CPU kernels on in-memory float32 tensors (bytes: inputs + output).</summary>
    private static void Strategies(long n, int experts)
    {
        using var baseTensor = torch.randn(n);
        var models = Enumerable.Range(0, experts).Select(_ => torch.randn(n)).ToList();
        using var output = torch.empty(n);
        using var scratch = new NoScratch();
        foreach (var strategy in new IMergeStrategy[] { new TaskArithmeticStrategy(), new TiesStrategy(), new DareTiesStrategy() })
        {
            var global = new Dictionary<string, object> { ["lambda"] = 1.0, ["density"] = 0.5, ["normalize"] = true, ["rescale"] = true };
            var request = new MergeTensorRequest
            {
                TensorName = "model.layers.0.mlp.up_proj.weight",
                LayerGroup = "model.layers.0",
                Base = baseTensor,
                Models = models,
                ModelNames = [.. models.Select((_, i) => "e" + i)],
                Weights = [.. models.Select(_ => 0.4)],
                Parameters = new ResolvedParameters(strategy.Name == "task_arithmetic" ? new Dictionary<string, object> { ["lambda"] = 1.0 } : global, []),
                Output = output,
                Scratch = scratch,
                Seed = 1,
            };
            Time($"{strategy.Name} kernel n={n} experts={experts}", n * 4 * (experts + 2), () => strategy.Merge(request));
        }
        models.ForEach(m => m.Dispose());
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

    private static void Time(string what, long bytes, Action op)
    {
        op();
        var clock = Stopwatch.StartNew();
        var reps = 0;
        while (clock.Elapsed.TotalSeconds < 0.3)
        {
            op();
            reps++;
        }
        var per = clock.Elapsed.TotalSeconds / reps;
        Console.WriteLine($"{what}: {per * 1e3:F3} ms{(bytes > 0 ? $", {bytes / per / 1e9:F2} GB/s" : string.Empty)}");
    }
}
