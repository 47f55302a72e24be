using SensMerging.Abstractions;
using SensMerging.Strategies.Interpolation;
using SensMerging.Strategies.ModelStock;
using SensMerging.Strategies.TaskArithmeticFamily;
using static SensMerging.Strategies.Tests.MergeHarness;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>
/// The methods outside linear and the task-arithmetic family that give mergekit's bits in a half-precision compute dtype
/// (<see cref="StrategyTraits.RoundsIntermediates"/>), each against an element-by-element emulation of mergekit a6e4028's
/// code under torch 2.x's CPU semantics, written from the formats' definitions (<see cref="HalfPrecisionTests.Round"/>):
/// an elementwise operation on half-precision tensors computes in float32 and rounds its result; a Python scalar in a
/// product enters as a float32; a bound of <c>clamp</c> or a comparison's scalar is cast to the dtype; a sum over the
/// stacked models accumulates in float32 in model order and rounds once.
/// </summary>
public sealed class HalfPrecisionMethodsTests
{
    public static TheoryData<ScalarType, double> NearswapCases => new()
    {
        { ScalarType.BFloat16, 0.01 }, // not a bfloat16 value: enters the product as the float32 0.01
        { ScalarType.BFloat16, 0.5 },
        { ScalarType.Float16, 0.01 },
        { ScalarType.Float16, 3e-4 },
    };

    /// <summary>
    /// mergekit: <c>weight = (t / abs(a - b).clamp(min=1e-6)).clamp(0, 1)</c> (Python's float over a tensor is
    /// <c>reciprocal() * t</c>), <c>weight * b + (1 - weight) * a</c>.
    /// </summary>
    [Theory]
    [MemberData(nameof(NearswapCases))]
    public void Nearswap_rounds_every_operation_as_mergekit(ScalarType dtype, double t)
    {
        var (a, b) = NearswapInputs(dtype, t);
        var strategy = new NearSwapStrategy();
        var global = new Dictionary<string, object> { ["t"] = t };
        var got = Run(strategy, a, [b], global: global, compute: dtype);

        var floor = R(1e-6f, dtype);
        var expected = new float[a.Length];
        for (var e = 0; e < a.Length; e++)
        {
            var difference = MathF.Max(MathF.Abs(R(a[e] - b[e], dtype)), floor);
            var w = Math.Clamp(R(R(1f / difference, dtype) * (float)t, dtype), 0f, 1f);
            expected[e] = R(R(w * b[e], dtype) + R(R(1f - w, dtype) * a[e], dtype), dtype);
        }
        AssertBits(expected, got);
        var once = Run(strategy, a, [b], global: global).Select(v => R(v, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, a.Length), e => Bits(once[e]) != Bits(expected[e]));
    }

    public static TheoryData<ScalarType, bool> RamCases => new()
    {
        { ScalarType.BFloat16, false },
        { ScalarType.Float16, false },
        { ScalarType.BFloat16, true },
        { ScalarType.Float16, true },
    };

    /// <summary>
    /// mergekit: <c>t = stack(x_i - base)</c>; counted <c>|t| &gt; epsilon</c>; <c>counts</c> per entry;
    /// <c>z = t * counted</c>; <c>(z * unique [* lambda]) + (z * overlap / counts.clamp(min=1))</c> summed over the models;
    /// plus the base. ramplus_tl's lambda (float32: int64 counts clamped by a float) promotes the unique part, the sum and
    /// the base's addition to float32, and its result is float32.
    /// </summary>
    [Theory]
    [MemberData(nameof(RamCases))]
    public void Ram_rounds_every_operation_as_mergekit(ScalarType dtype, bool plus)
    {
        var (b, xs) = RamInputs(dtype);
        var strategy = plus ? RamStrategy.PlusTensorLocal() : RamStrategy.Plain();
        const double epsilon = 1e-5, r = 0.3, alpha = 0.6; // epsilon rounds up in both dtypes
        var global = new Dictionary<string, object> { ["epsilon"] = epsilon };
        if (plus)
        {
            global["r"] = r;
            global["alpha"] = alpha;
        }
        var got = Run(strategy, b, xs, global: global, compute: dtype);

        var n = b.Length;
        var k = xs.Length;
        var eps = R((float)epsilon, dtype); // a comparison casts its scalar to the dtype
        var t = xs.Select(x => x.Select((v, e) => R(v - b[e], dtype)).ToArray()).ToArray();
        var counted = t.Select(row => row.Select(v => MathF.Abs(v) > eps).ToArray()).ToArray();
        var counts = Enumerable.Range(0, n).Select(e => Enumerable.Range(0, k).Count(i => counted[i][e])).ToArray();
        var lambda = new float[k];
        Array.Fill(lambda, 1f);
        if (plus)
        {
            for (var i = 0; i < k; i++)
            {
                var shared = Enumerable.Range(0, n).Count(e => counted[i][e] && counts[e] > 1);
                var alone = Enumerable.Range(0, n).Count(e => counted[i][e] && counts[e] == 1);
                var rho = shared / MathF.Max(alone, (float)epsilon);
                lambda[i] = (Math.Clamp(rho, 0f, (float)alpha) * (float)r) + 1f;
            }
        }
        var expected = new float[n];
        for (var e = 0; e < n; e++)
        {
            var sum = 0f;
            for (var i = 0; i < k; i++)
            {
                var z = t[i][e] * (counted[i][e] ? 1f : 0f);
                var uniquePart = z * (counts[e] == 1 ? 1f : 0f);
                var sharedPart = R(z * (counts[e] > 1 ? 1f : 0f) / Math.Max(counts[e], 1), dtype);
                sum += plus ? (uniquePart * lambda[i]) + sharedPart : R(uniquePart + sharedPart, dtype);
            }
            expected[e] = plus ? b[e] + sum : R(b[e] + R(sum, dtype), dtype);
        }
        AssertBits(expected, got);
        var once = Run(strategy, b, xs, global: global).Select(v => plus ? v : R(v, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, n), e => Bits(once[e]) != Bits(expected[e]));
    }

    public static TheoryData<ScalarType, double> SceCases => new()
    {
        { ScalarType.BFloat16, 1.0 },
        { ScalarType.Float16, 1.0 },
        { ScalarType.BFloat16, 0.5 },
        { ScalarType.Float16, 0.5 },
    };

    /// <summary>
    /// mergekit: <c>t = stack(x_i - base)</c>, times the variance mask when select_topk &lt; 1; the majority sign of
    /// <c>t.sum(0)</c>; <c>w = mean(t^2)</c> per model over the tensor, divided by their sum (a Python float);
    /// <c>(t * w * erase).sum(0) / (w * erase).sum(0).clamp(min=1e-6)</c> plus the base. The per-model means are the one
    /// operation taken from torch itself (<c>mean</c> over the tensor in the dtype): torch sums a tensor in float32 with its
    /// own blocked partial sums, whose order no simple loop reproduces. With select_topk 0.5 the inputs make the mask
    /// unambiguous: 800 entries whose task vectors disagree by at least 0.06 and 800 that differ by at most 0.002 (the
    /// other 400 are equal in every model: variance 0, not counted), so the top int(1600 * 0.5) are the first kind.
    /// </summary>
    [Theory]
    [MemberData(nameof(SceCases))]
    public void Sce_rounds_every_operation_as_mergekit(ScalarType dtype, double topk)
    {
        long[] shape = [40, 50];
        var (b, xs, wide) = SceInputs(dtype);
        var strategy = new SceStrategy();
        var global = new Dictionary<string, object> { ["select_topk"] = topk };
        var got = Run(strategy, b, xs, global: global, shape: shape, compute: dtype);

        var n = b.Length;
        var k = xs.Length;
        var t = xs.Select(x => x.Select((v, e) => R(v - b[e], dtype)).ToArray()).ToArray();
        if (topk < 1)
        {
            t = [.. t.Select(row => row.Select((v, e) => v * (wide[e] ? 1f : 0f)).ToArray())];
        }
        var squares = t.SelectMany(row => row.Select(v => R(v * v, dtype))).ToArray();
        float[] means;
        using (var wideSquares = tensor(squares, [k, .. shape]))
        using (var narrowSquares = wideSquares.to(dtype))
        using (var mean = narrowSquares.mean([1L, 2L]))
        using (var wideMean = mean.to(ScalarType.Float32))
        {
            means = wideMean.data<float>().ToArray();
        }
        var total = R(means.Sum(), dtype);
        var weights = means.Select(m => MathF.Abs(total) < 1e-6f ? R(1f / k, dtype) : R(m / total, dtype)).ToArray();
        var floor = R(1e-6f, dtype);
        var expected = new float[n];
        for (var e = 0; e < n; e++)
        {
            var signSum = 0f;
            for (var i = 0; i < k; i++)
            {
                signSum += t[i][e];
            }
            var majority = R(signSum, dtype) >= 0 ? 1 : -1;
            var merged = 0f;
            var divisor = 0f;
            for (var i = 0; i < k; i++)
            {
                var erased = weights[i] * (MathF.Sign(t[i][e]) == majority ? 1f : 0f);
                merged += R(t[i][e] * erased, dtype);
                divisor += erased;
            }
            expected[e] = R(b[e] + R(R(merged, dtype) / MathF.Max(R(divisor, dtype), floor), dtype), dtype);
        }
        AssertBits(expected, got);
        var once = Run(strategy, b, xs, global: global, shape: shape).Select(v => R(v, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, n), e => Bits(once[e]) != Bits(expected[e]));
    }

    /// <summary>20 x 50, or 1050 x 1000: more than one chunk of the blend (1 Mi elements).</summary>
    public static TheoryData<ScalarType, bool, int, int> ModelStockCases => new()
    {
        { ScalarType.BFloat16, false, 20, 50 },
        { ScalarType.Float16, false, 20, 50 },
        { ScalarType.BFloat16, true, 20, 50 },
        { ScalarType.Float16, true, 20, 50 },
        { ScalarType.BFloat16, false, 1050, 1000 },
        { ScalarType.BFloat16, true, 1050, 1000 },
    };

    /// <summary>
    /// mergekit: <c>o_i = x_i - base</c> (flattened, or per row with filter_wise); per pair
    /// <c>((o_i * o_j).sum(-1) / (norm(o_i) * norm(o_j)).clamp(min=1e-6)).clamp(-1, 1)</c>; their mean;
    /// <c>t = (N cos) / (1 + (N - 1) cos)</c>; <c>sum(ws) / N</c> (Python's sum starts from the int 0, so
    /// <c>-0 + 0</c> is +0); <c>t * avg + (1 - t) * base</c>. The norms and the sums over a row are taken from torch
    /// itself (its blocked float32 accumulation has no simple order); everything else is emulated here. The mean of the
    /// three cosines is a float32 sum divided and rounded once (torch &gt;= 2.1's mean of a half-precision tensor).
    /// </summary>
    [Theory]
    [MemberData(nameof(ModelStockCases))]
    public void Model_stock_rounds_every_operation_as_mergekit(ScalarType dtype, bool filterWise, int rows, int columns)
    {
        var n = rows * columns;
        var (b, xs) = ModelStockInputs(dtype, n);
        var strategy = new ModelStockStrategy();
        var global = new Dictionary<string, object> { ["filter_wise"] = filterWise };
        long[] shape = [rows, columns];
        var got = Run(strategy, b, xs, global: global, shape: shape, compute: dtype);

        var k = xs.Length;
        var groups = filterWise ? rows : 1;
        var width = n / groups;
        var o = xs.Select(x => x.Select((v, e) => R(v - b[e], dtype)).ToArray()).ToArray();
        float[] FromTorch(float[] values, Func<Tensor, Tensor> reduce)
        {
            using var wide = tensor(values, [groups, width]);
            using var narrow = wide.to(dtype);
            using var reduced = reduce(narrow);
            using var back = reduced.to(ScalarType.Float32);
            return back.data<float>().ToArray();
        }
        var norms = o.Select(v => FromTorch(v, x => linalg.vector_norm(x, 2, [-1L]))).ToArray();
        var floor = R(1e-6f, dtype);
        var cosSums = new float[groups];
        var pairs = 0;
        for (var i = 0; i < k; i++)
        {
            for (var j = i + 1; j < k; j++)
            {
                pairs++;
                var dots = FromTorch([.. o[i].Select((v, e) => R(v * o[j][e], dtype))], x => x.sum(-1L));
                for (var g = 0; g < groups; g++)
                {
                    cosSums[g] += Math.Clamp(R(dots[g] / MathF.Max(R(norms[i][g] * norms[j][g], dtype), floor), dtype), -1f, 1f);
                }
            }
        }
        var expected = new float[n];
        for (var g = 0; g < groups; g++)
        {
            var cos = R(cosSums[g] / pairs, dtype);
            var denominator = R(1f + R((k - 1) * cos, dtype), dtype);
            var t = denominator == 0 ? 0f : R(R(k * cos, dtype) / denominator, dtype);
            for (var e = g * width; e < (g + 1) * width; e++)
            {
                var sum = R(0f + xs[0][e], dtype);
                for (var i = 1; i < k; i++)
                {
                    sum = R(sum + xs[i][e], dtype);
                }
                var average = R(sum / k, dtype);
                expected[e] = R(R(t * average, dtype) + R(R(1f - t, dtype) * b[e], dtype), dtype);
            }
        }
        AssertBits(expected, got);
        var once = Run(strategy, b, xs, global: global, shape: shape).Select(v => R(v, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, n), e => Bits(once[e]) != Bits(expected[e]));
    }

    [Fact]
    public void Methods_that_round_like_mergekit_say_so()
    {
        Assert.True(new ModelStockStrategy().Traits.RoundsIntermediates);
        Assert.True(new SceStrategy().Traits.RoundsIntermediates);
        Assert.True(new NearSwapStrategy().Traits.RoundsIntermediates);
        Assert.True(RamStrategy.Plain().Traits.RoundsIntermediates);
        Assert.True(RamStrategy.PlusTensorLocal().Traits.RoundsIntermediates);
        Assert.True(RamStrategy.PlusTensorLocal().Traits.WritesFloat32); // mergekit's float32 lambda promotes its result
        Assert.False(RamStrategy.Plain().Traits.WritesFloat32);
    }

    /// <summary>
    /// A base and three models in the dtype: entries changed by one, two or three models (means of 2 and 3 that round),
    /// changes at and just around epsilon (1e-5, which rounds up to a larger value in both dtypes: a change equal to the
    /// rounded epsilon is not counted, though it is above 1e-5), bases of several scales, signed zeros, subnormal and huge
    /// values.
    /// </summary>
    private static (float[] Base, float[][] Models) RamInputs(ScalarType dtype)
    {
        var rng = new Random(23);
        const int n = 3000;
        var b = new float[n];
        var xs = new[] { new float[n], new float[n], new float[n] };
        var eps = R(1e-5f, dtype);
        var near = new[] { eps, R(eps * 1.05f, dtype), R(eps * 0.95f, dtype), -eps };
        for (var e = 0; e < n; e++)
        {
            b[e] = R((float)((rng.NextDouble() - 0.5) * Math.Pow(10, -rng.Next(5))), dtype);
            for (var i = 0; i < 3; i++)
            {
                var change = rng.Next(4) switch
                {
                    0 => 0f,
                    1 => near[rng.Next(near.Length)],
                    _ => (float)(0.02 * (rng.NextDouble() - 0.5)),
                };
                xs[i][e] = R(b[e] + change, dtype);
            }
        }
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(5) : BitConverter.UInt32BitsToSingle(0x00050000u);
        var huge = R(dtype == ScalarType.Float16 ? 30000f : 1e38f, dtype);
        (float Base, float X0, float X1, float X2)[] special =
        [
            (0f, -0f, 0f, -0f), (-0f, -0f, -0f, 0f), (-0f, 0f, 0f, 0f), (0.5f, 0.5f, 0.5f, 0.5f),
            (tiny, -tiny, tiny, 0f), (huge, -huge, huge, R(huge * 0.5f, dtype)), (-huge, huge, huge, huge), (1f, 2f, 3f, 3f),
            (0f, eps, 0f, 0f), (0f, eps, -eps, 0f), (0f, R(eps * 1.05f, dtype), eps, 0f), (0f, -eps, 0f, R(eps * 1.05f, dtype)),
        ];
        for (var s = 0; s < special.Length; s++)
        {
            (b[s], xs[0][s], xs[1][s], xs[2][s]) = special[s];
        }
        return (b, xs);
    }

    /// <summary>
    /// A base and a model in the dtype: most entries within a few t of each other (blended), then the awkward ones: equal
    /// values, signed zeros, a difference of exactly t, subnormal and huge values, differences that overflow.
    /// </summary>
    private static (float[] A, float[] B) NearswapInputs(ScalarType dtype, double t)
    {
        var rng = new Random(17);
        var a = new List<float>();
        var b = new List<float>();
        for (var e = 0; e < 2000; e++)
        {
            var x = R((float)(rng.NextDouble() - 0.5), dtype);
            a.Add(x);
            b.Add(R(x + (float)(t * 4 * (rng.NextDouble() - 0.5)), dtype));
        }
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(3) : BitConverter.UInt32BitsToSingle(0x00030000u);
        var huge = R(dtype == ScalarType.Float16 ? 60000f : 3e38f, dtype);
        var step = R((float)t, dtype);
        (float, float)[] special =
        [
            (0.25f, 0.25f), (0f, -0f), (-0f, 0f), (-0f, -0f), (0f, 0f), (1f, R(1f + step, dtype)), (-1f, R(-1f - step, dtype)),
            (tiny, -tiny), (tiny, 0f), (-tiny, 2 * tiny), (huge, -huge), (-huge, huge), (huge, huge), (huge, 0f), (0f, -huge),
            (R(1e-6f, dtype), 0f), (R(3e-6f, dtype), R(-3e-6f, dtype)),
        ];
        foreach (var (x, y) in special)
        {
            a.Add(x);
            b.Add(y);
        }
        return ([.. a], [.. b]);
    }

    /// <summary>
    /// A 40 x 50 base and three models in the dtype, entries of three kinds (see the test). Wide: task vectors
    /// (c1, -c2, c3), c1, c2 in [0.2, 0.4], |c3| &lt;= 0.4 (variance over 0.02); narrow: c1, c2 in [0.005, 0.01], |c3| &lt;=
    /// 0.01 (variance between 1e-5 and 1e-4, not 0 in float16 either); none. Some of each kind are replaced by awkward
    /// ones of the same kind: signed zeros, equal values, a sign sum of exactly 0 (majority +1), a subnormal change,
    /// large values.
    /// </summary>
    private static (float[] Base, float[][] Models, bool[] Wide) SceInputs(ScalarType dtype)
    {
        var rng = new Random(31);
        const int n = 2000;
        var b = new float[n];
        var xs = new[] { new float[n], new float[n], new float[n] };
        var kinds = Enumerable.Range(0, n).Select(e => e < 800 ? 0 : e < 1600 ? 1 : 2).OrderBy(_ => rng.Next()).ToArray();
        float U(double low, double high) => (float)(low + ((high - low) * rng.NextDouble()));
        for (var e = 0; e < n; e++)
        {
            b[e] = R(U(-0.1, 0.1), dtype);
            float[] change = kinds[e] switch
            {
                0 => [U(0.2, 0.4), -U(0.2, 0.4), U(-0.4, 0.4)],
                1 => [U(0.005, 0.01), -U(0.005, 0.01), U(-0.01, 0.01)],
                _ => [0f, 0f, 0f],
            };
            var order = rng.Next(3); // which model gets which change
            for (var i = 0; i < 3; i++)
            {
                xs[i][e] = R(b[e] + change[(i + order) % 3], dtype);
            }
        }
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(7) : BitConverter.UInt32BitsToSingle(0x00070000u);
        (int Kind, float Base, float X0, float X1, float X2)[] special =
        [
            (2, 0f, -0f, 0f, -0f), (2, -0f, 0f, -0f, -0f), (2, 0.5f, 0.5f, 0.5f, 0.5f),
            (0, 0.25f, 0.5f, 0f, 0.25f), (0, 0f, 0.3f, -0.3f, tiny), (0, -0.125f, 0.5f, -0.75f, 0.125f),
            (0, R(1000f, dtype), R(1010f, dtype), R(990f, dtype), R(1000f, dtype)),
            (1, 0f, R(0.008f, dtype), R(-0.008f, dtype), 0f),
        ];
        var used = new HashSet<int>();
        foreach (var (kind, x, x0, x1, x2) in special)
        {
            var e = Enumerable.Range(0, n).First(e => kinds[e] == kind && used.Add(e));
            (b[e], xs[0][e], xs[1][e], xs[2][e]) = (R(x, dtype), R(x0, dtype), R(x1, dtype), R(x2, dtype));
        }
        return (b, xs, [.. kinds.Select(kind => kind == 0)]);
    }

    /// <summary>
    /// A base and three models in the dtype whose task vectors share a direction (cosines near 0.5), with a few awkward
    /// entries: all -0 (Python's <c>0 + -0</c> is +0), signed zeros, equal values, a subnormal, large values.
    /// </summary>
    private static (float[] Base, float[][] Models) ModelStockInputs(ScalarType dtype, int n)
    {
        var rng = new Random(41);
        float U(double scale) => (float)(scale * (rng.NextDouble() - 0.5));
        var b = Enumerable.Range(0, n).Select(_ => R(U(1), dtype)).ToArray();
        var shared = Enumerable.Range(0, n).Select(_ => U(0.02)).ToArray();
        var xs = Enumerable.Range(0, 3).Select(_ => b.Select((v, e) => R(v + shared[e] + U(0.02), dtype)).ToArray()).ToArray();
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(9) : BitConverter.UInt32BitsToSingle(0x00090000u);
        (float Base, float X0, float X1, float X2)[] special =
        [
            (-0f, -0f, -0f, -0f), (0f, -0f, 0f, -0f), (-0f, 0f, -0f, 0f), (0.5f, 0.5f, 0.5f, 0.5f), (tiny, -tiny, tiny, 0f),
            (R(1000f, dtype), R(1004f, dtype), R(1000f, dtype), R(996f, dtype)),
        ];
        for (var s = 0; s < special.Length; s++)
        {
            var e = 7 + (s * 50); // one per row of the first rows
            (b[e], xs[0][e], xs[1][e], xs[2][e]) = special[s];
        }
        return (b, xs);
    }

    internal static float R(float value, ScalarType dtype) => HalfPrecisionTests.Round(value, dtype);

    internal static uint Bits(float value) => BitConverter.SingleToUInt32Bits(value);

    /// <summary>Equal bit for bit (signed zeros told apart), with the first difference in the message.</summary>
    internal static void AssertBits(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var e = 0; e < expected.Length; e++)
        {
            if (Bits(expected[e]) != Bits(actual[e]))
            {
                Assert.Fail($"element {e}: expected {expected[e]:R} (0x{Bits(expected[e]):X8}), got {actual[e]:R} (0x{Bits(actual[e]):X8})");
            }
        }
    }
}
