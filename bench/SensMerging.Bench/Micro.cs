using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Bench;

/// <summary>In-place op rates on pooled tensors (GB/s of tensor bytes touched), to see what the math costs.</summary>
internal static class Micro
{
    public static void Run()
    {
        using var noGrad = torch.no_grad();
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
