using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using SensMerging.Strategies.Linear;
using TorchSharp;
using static SensMerging.Strategies.Tests.MergeHarness;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>
/// With a half-precision <see cref="MergeTensorRequest.ComputeDType"/> (a config's <c>dtype: bfloat16</c>) linear and the
/// task-arithmetic family give mergekit's bits: every intermediate rounded where mergekit's torch rounds it. The
/// reference below emulates mergekit's code element by element from torch 2.x's CPU semantics (mergekit needs
/// torch &gt;= 2.0): an elementwise operation on half-precision tensors computes in float32 and rounds its result; a
/// Python scalar operand (lambda in <c>mixed *= lambda</c>, the rescale factor's 0-dim tensor) enters as a float32, not
/// rounded to the dtype; <c>torch.tensor(weights,
/// dtype=...)</c> rounds each weight; a sum over the stacked models accumulates in float32 in model order and rounds
/// once. The rounding is written from the formats' definitions, not with torch or the plugins' converters.
/// </summary>
public sealed class HalfPrecisionTests
{
    private const int N = 1003;

    public static TheoryData<ScalarType> HalfTypes => new() { ScalarType.BFloat16, ScalarType.Float16 };

    [Theory]
    [MemberData(nameof(HalfTypes))]
    public void Linear_rounds_each_product_and_the_sum_as_mergekit(ScalarType dtype)
    {
        var (_, xs) = Inputs(dtype, seed: 3);
        double[] weights = [0.3, 0.55, 0.9];
        foreach (var normalize in new[] { true, false })
        {
            var global = new Dictionary<string, object> { ["normalize"] = normalize };
            var got = Run(new LinearStrategy(), null, xs, weights, global, compute: dtype);
            var wb = weights.Select(w => Round((float)w, dtype)).ToArray();
            var expected = new float[N];
            for (var e = 0; e < N; e++)
            {
                var sum = 0f;
                var total = 0f;
                for (var i = 0; i < xs.Length; i++)
                {
                    sum += Round(wb[i] * xs[i][e], dtype);
                    total += wb[i];
                }
                expected[e] = normalize ? Round(Round(sum, dtype) / Round(total, dtype), dtype) : Round(sum, dtype);
            }
            Assert.Equal(expected, got);
            AssertDiffersFromRoundingOnce(new LinearStrategy(), null, xs, weights, global, null, dtype, expected);
        }
    }

    /// <summary>N elements, or a tensor of more than one chunk of the elementwise combination (1 Mi elements).</summary>
    [Theory]
    [InlineData("task_arithmetic", "BFloat16", N)]
    [InlineData("task_arithmetic", "Float16", N)]
    [InlineData("ties", "BFloat16", N)]
    [InlineData("ties", "Float16", N)]
    [InlineData("breadcrumbs_ties", "BFloat16", N)]
    [InlineData("dare_linear", "BFloat16", N)]
    [InlineData("dare_ties", "BFloat16", (1 << 20) + 37)]
    [InlineData("ties", "BFloat16", (1 << 20) + 37)]
    [InlineData("dare_ties", "BFloat16", N)]
    public void Task_arithmetic_family_rounds_every_intermediate_as_mergekit(string method, string dtypeName, int n)
    {
        var dtype = Enum.Parse<ScalarType>(dtypeName);
        var variant = TaskArithmeticVariant.All.Single(v => v.Name == method);
        var (b, xs) = Inputs(dtype, seed: 11, n);
        double[] weights = [0.7, 0.4, 1.1];
        const double lambda = 0.8;
        double[] densities = [0.5, 0.7, 0.6];
        var global = new Dictionary<string, object> { ["lambda"] = lambda };
        var perModel = densities.Select(d => new Dictionary<string, object> { ["density"] = d }).ToArray();
        if (method == "breadcrumbs_ties")
        {
            foreach (var p in perModel)
            {
                p["gamma"] = 0.05;
            }
        }
        const long seed = 5;
        var got = Run(GeneralizedTaskArithmeticStrategy.Create(variant), b, xs, weights, global, perModel, seed, compute: dtype);

        // mergekit: d_i = x_i - base, sparsified; w_i * d_i with w a tensor of the dtype; mixed; / divisor; * lambda; + base.
        var wb = weights.Select(w => Round((float)w, dtype)).ToArray();
        var deltas = new float[xs.Length][];
        for (var i = 0; i < xs.Length; i++)
        {
            var d = xs[i].Select((x, e) => Round(x - b[e], dtype)).ToArray();
            d = method switch
            {
                "ties" => KeepLargest(d, (int)Math.Floor(densities[i] * n)),
                "breadcrumbs_ties" => KeepBand(d, (int)Math.Floor(densities[i] * n), (int)Math.Floor(0.05 * n)),
                "dare_linear" or "dare_ties" => Rescaled(d, DareKept(d, i, densities[i], seed), dtype),
                _ => d,
            };
            deltas[i] = [.. d.Select(v => Round(v * wb[i], dtype))];
        }
        var consensus = variant.Consensus == ConsensusMethod.Sum;
        var normalize = variant.DefaultNormalize;
        var expected = new float[n];
        for (var e = 0; e < n; e++)
        {
            float mixed;
            float divisor;
            if (consensus)
            {
                var signSum = 0f;
                for (var i = 0; i < xs.Length; i++)
                {
                    signSum += deltas[i][e];
                }
                var majority = Round(signSum, dtype) >= 0 ? 1 : -1;
                var kept = 0f;
                var keptWeights = 0f;
                for (var i = 0; i < xs.Length; i++)
                {
                    if (Math.Sign(deltas[i][e]) == majority)
                    {
                        kept += deltas[i][e];
                        keptWeights += wb[i];
                    }
                }
                mixed = Round(kept, dtype);
                divisor = Round(keptWeights, dtype);
                divisor = divisor == 0 ? 1 : divisor;
            }
            else
            {
                var sum = 0f;
                var total = 0f;
                for (var i = 0; i < xs.Length; i++)
                {
                    sum += deltas[i][e];
                    total += wb[i];
                }
                mixed = Round(sum, dtype);
                divisor = Round(total, dtype);
                divisor = Math.Abs(divisor) < 1e-8 ? 1 : divisor;
            }
            if (normalize)
            {
                mixed = Round(mixed / divisor, dtype);
            }
            mixed = Round(mixed * (float)lambda, dtype);
            expected[e] = Round(b[e] + mixed, dtype);
        }
        Assert.Equal(expected, got);
        AssertDiffersFromRoundingOnce(GeneralizedTaskArithmeticStrategy.Create(variant), b, xs, weights, global, perModel, dtype, expected, seed);
    }

    [Fact]
    public void Strategies_that_round_like_mergekit_say_so()
    {
        Assert.True(new LinearStrategy().Traits.RoundsIntermediates);
        Assert.True(new PassthroughStrategy().Traits.RoundsIntermediates);
        Assert.All(TaskArithmeticVariant.All, v => Assert.True(v.Traits.RoundsIntermediates, v.Name));
    }

    /// <summary>The float32 merge rounded once must differ somewhere, or the comparison above would prove nothing.</summary>
    private static void AssertDiffersFromRoundingOnce(
        IMergeStrategy strategy, float[]? b, float[][] xs, double[] weights, Dictionary<string, object> global,
        Dictionary<string, object>[]? perModel, ScalarType dtype, float[] expected, long seed = 0)
    {
        var once = Run(strategy, b, xs, weights, global, perModel, seed).Select(v => Round(v, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, expected.Length), e => once[e] != expected[e]);
    }

    /// <summary>A base and three fine-tunes close to it, every value representable in <paramref name="dtype"/> (as the host guarantees).</summary>
    private static (float[] Base, float[][] Models) Inputs(ScalarType dtype, int seed, int n = N)
    {
        var rng = new Random(seed);
        float Normal(double scale) => (float)(scale * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        var b = Enumerable.Range(0, n).Select(_ => Round(Normal(0.05), dtype)).ToArray();
        var xs = new[] { 0.002, 0.01, 0.004 }.Select(scale => b.Select(v => Round(v + Normal(scale), dtype)).ToArray()).ToArray();
        return (b, xs);
    }

    /// <summary>TIES: the k largest magnitudes, and every entry tied with the smallest of them.</summary>
    private static float[] KeepLargest(float[] d, int k)
    {
        var threshold = d.Select(MathF.Abs).OrderByDescending(v => v).ElementAt(k - 1);
        return [.. d.Select(v => MathF.Abs(v) >= threshold ? v : 0f)];
    }

    /// <summary>Breadcrumbs: drop the top <paramref name="top"/> magnitudes and the bottom n - keep - top (boundary ties kept).</summary>
    private static float[] KeepBand(float[] d, int keep, int top)
    {
        var ascending = d.Select(MathF.Abs).Order().ToArray();
        var lower = ascending[d.Length - keep - top];
        var upper = ascending[d.Length - top - 1];
        return [.. d.Select(v => MathF.Abs(v) >= lower && MathF.Abs(v) <= upper ? v : 0f)];
    }

    /// <summary>
    /// The value the L1 rescale's norms take (<see cref="Rescaled"/>), checked against torch itself: with one thread, torch's
    /// bfloat16 <c>sum()</c> of task-vector-like magnitudes (|N(0, 0.01)| rounded to bfloat16, 64 Ki to 4 Mi elements,
    /// before and after a mask keeping four in seven) is the float64 sum rounded to float32 and then to bfloat16. With two
    /// threads torch rounds its partial sums to the output dtype before adding them (about one such sum in five came out
    /// one unit off, measured), so mergekit's own bytes depend on the machine that ran it; the one-thread value is the
    /// order-free one.
    /// </summary>
    [Fact]
    public void Torch_one_thread_bfloat16_sums_are_the_float64_sum_rounded_through_float32()
    {
        var differing = new List<string>();
        var checkedSums = 0;
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? failure = null;
        // On a thread of its own: torch's thread count is set for the calling thread. Its exception, if any, is rethrown
        // here (unhandled on that thread it would end the test process).
        var worker = new Thread(() =>
        {
            try
            {
                SumsOnOneThread();
            }
            catch (Exception ex)
            {
                failure = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex);
            }
        });
        worker.Start();
        worker.Join();
        failure?.Throw();
        Assert.Equal(24, checkedSums);
        Assert.True(differing.Count == 0, string.Join("; ", differing));

        void SumsOnOneThread()
        {
            var previous = torch.get_num_threads();
            torch.set_num_threads(1);
            try
            {
                var rng = new Random(20261205);
                foreach (var n in new[] { 1 << 16, (1 << 18) + 5, 1 << 20, (1 << 22) + 3 })
                {
                    for (var k = 0; k < 3; k++)
                    {
                        var magnitudes = new float[n];
                        for (var e = 0; e < n; e++)
                        {
                            var gaussian = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
                            magnitudes[e] = Round((float)Math.Abs(0.01 * gaussian), ScalarType.BFloat16);
                        }
                        var masked = magnitudes.Select((m, e) => (e * 2654435761L + k) % 7 < 4 ? m : 0f).ToArray();
                        foreach (var values in new[] { magnitudes, masked })
                        {
                            // Each intermediate held by a variable: a temporary's finalizer could free its tensor while
                            // libtorch still reads it (the GC runs often here, with these arrays).
                            using var wide = torch.tensor(values);
                            using var stored = wide.to(ScalarType.BFloat16);
                            using var sum = stored.sum();
                            using var sumWide = sum.to(ScalarType.Float32);
                            var byTorch = sumWide.item<float>();
                            var expected = Round((float)values.Sum(v => (double)v), ScalarType.BFloat16);
                            checkedSums++;
                            if (byTorch != expected)
                            {
                                differing.Add($"{values.Length} elements: torch {byTorch:R}, float64 through float32 {expected:R}");
                            }
                        }
                    }
                }
            }
            finally
            {
                torch.set_num_threads(previous);
            }
        }
    }

    /// <summary>DARE's keep decisions: the project's counter stream keyed by seed + model and the element's position.</summary>
    private static bool[] DareKept(float[] d, int model, double density, long seed)
    {
        var key = CounterRandom.StreamKey(seed + model);
        var threshold = CounterRandom.Threshold(density);
        return [.. d.Select((_, e) => CounterRandom.Uniform24(key, e) < threshold)];
    }

    /// <summary>
    /// mergekit's L1 rescale in the dtype: the two norms, their ratio rounded, each kept entry times it rounded. mergekit
    /// takes the norms with torch's <c>tensor.abs().sum()</c> in the dtype, a float32 accumulation in torch's blocked
    /// order, which depends on its thread count; the value here is the one torch's one-thread sum gives
    /// (<see cref="Torch_one_thread_bfloat16_sums_are_the_float64_sum_rounded_through_float32"/>): the float64 sum
    /// rounded to float32, then to the dtype.
    /// </summary>
    private static float[] Rescaled(float[] d, bool[] kept, ScalarType dtype)
    {
        float Norm(IEnumerable<float> values) => Round((float)values.Sum(v => (double)MathF.Abs(v)), dtype);
        var before = Norm(d);
        var after = Norm(d.Select((v, e) => kept[e] ? v : 0f));
        var factor = Round(before / after, dtype);
        return [.. d.Select((v, e) => kept[e] ? Round(v * factor, dtype) : 0f)];
    }

    /// <summary>Round to nearest even in <paramref name="dtype"/>, from the formats' definitions.</summary>
    internal static float Round(float value, ScalarType dtype)
    {
        if (dtype == ScalarType.Float16)
        {
            return (float)(Half)value;
        }
        if (float.IsNaN(value))
        {
            return value;
        }
        var bits = BitConverter.SingleToUInt32Bits(value);
        return BitConverter.UInt32BitsToSingle((bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u);
    }
}
