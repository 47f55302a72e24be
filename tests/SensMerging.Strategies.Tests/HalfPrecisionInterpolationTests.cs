using SensMerging.Strategies.Interpolation;
using static SensMerging.Strategies.Tests.HalfPrecisionMethodsTests;
using static SensMerging.Strategies.Tests.MergeHarness;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>
/// The interpolation plugin's methods in a half-precision compute dtype against element-by-element emulations of mergekit
/// a6e4028's code under torch 2.x's CPU semantics (as <see cref="HalfPrecisionMethodsTests"/>): every operation on
/// half-precision tensors computes in float32 and rounds its result; a Python float enters a product as a float32; a
/// 0-d float32 tensor as the second operand of a product or quotient enters as it is (torch's
/// <c>original_scalar_value</c>), as the first operand it is rounded to the dtype first; a bound of <c>clamp</c> or a
/// comparison's scalar is cast to the dtype. Whole-tensor (or per-vector) norms and sums are taken from torch, on the same
/// layout mergekit reduces (their float32 accumulation order is torch's); acos, sin and cos of the per-vector values
/// are computed here in double and rounded.
/// </summary>
public sealed class HalfPrecisionInterpolationTests
{
    public static TheoryData<ScalarType, string, bool> NuslerpCases => new()
    {
        { ScalarType.BFloat16, "flatten", true },
        { ScalarType.Float16, "flatten", true },
        { ScalarType.BFloat16, "flatten", false },
        { ScalarType.BFloat16, "rows", true },
        { ScalarType.Float16, "rows", true },
        { ScalarType.BFloat16, "rows", false },
        { ScalarType.Float16, "rows", false },
        { ScalarType.BFloat16, "columns", true },
        { ScalarType.Float16, "columns", false },
    };

    /// <summary>
    /// mergekit: with a base <c>v_i = x_i - base</c>; vectors flattened, rows, or (row_wise) <c>transpose(0, -1)</c>;
    /// <c>u = v / norm(v, dim=-1).clamp(min=1e-7)</c>; <c>cos = sum(u0 * u1, -1)</c>; <c>theta = acos(cos.clamp(-1, 1))</c>;
    /// <c>(sin((1 - t) theta) v0 + sin(t theta) v1) / sin theta</c>, or <c>(1 - t) v0 + t v1</c> where
    /// <c>|sin theta| &lt; 1e-8</c> (cast to the dtype: 0 in float16); plus the base. t = 0.9 / 1.25 = 0.72, not a float32
    /// value.
    /// </summary>
    [Theory]
    [MemberData(nameof(NuslerpCases))]
    public void Nuslerp_rounds_every_operation_as_mergekit(ScalarType dtype, string layout, bool withBase)
    {
        const int rows = 12, columns = 40;
        long[] shape = [rows, columns];
        var n = rows * columns;
        var (b, x0, x1) = layout == "columns" ? Transposed(NuslerpInputs(dtype, columns, rows), columns, rows) : NuslerpInputs(dtype, rows, columns);
        double[] weights = [0.35, 0.9];
        var t = 0.9 / 1.25;
        var global = new Dictionary<string, object> { ["nuslerp_flatten"] = layout == "flatten", ["nuslerp_row_wise"] = layout == "columns" };
        var strategy = new NuSlerpStrategy();
        var got = Run(strategy, withBase ? b : null, [x0, x1], weights, global, shape: shape, compute: dtype);

        var v0 = withBase ? x0.Select((v, e) => R(v - b[e], dtype)).ToArray() : x0;
        var v1 = withBase ? x1.Select((v, e) => R(v - b[e], dtype)).ToArray() : x1;
        // The vector each element belongs to, in the order torch returns the per-vector reductions.
        Func<int, int> vectorOf = layout switch
        {
            "flatten" => _ => 0,
            "rows" => e => e / columns,
            _ => e => e % columns,
        };
        float[] Reduce(float[] values, Func<Tensor, Tensor> reduce)
        {
            using var wide = tensor(values, shape);
            using var narrow = wide.to(dtype);
            using var laid = layout == "flatten" ? narrow.reshape(-1) : layout == "columns" ? narrow.transpose(0, -1) : narrow.alias();
            using var reduced = reduce(laid);
            using var back = reduced.to(ScalarType.Float32);
            return back.reshape(-1).data<float>().ToArray();
        }
        var floor = R(1e-7f, dtype);
        float[] Normalize(float[] v)
        {
            var norms = Reduce(v, x => linalg.vector_norm(x, 2, [-1L], keepdim: true));
            return [.. v.Select((value, e) => R(value / MathF.Max(norms[vectorOf(e)], floor), dtype))];
        }
        var u0 = Normalize(v0);
        var u1 = Normalize(v1);
        var cos = Reduce([.. u0.Select((value, e) => R(value * u1[e], dtype))], x => x.sum(-1L, keepdim: true));
        var theta = cos.Select(c => F(Math.Acos(Math.Clamp(c, -1f, 1f)), dtype)).ToArray();
        var sin = theta.Select(a => F(Math.Sin(a), dtype)).ToArray();
        var s0 = theta.Select(a => F(Math.Sin(R((float)(1 - t) * a, dtype)), dtype)).ToArray();
        var s1 = theta.Select(a => F(Math.Sin(R((float)t * a, dtype)), dtype)).ToArray();
        var colinearBound = R(1e-8f, dtype);
        var expected = new float[n];
        for (var e = 0; e < n; e++)
        {
            var j = vectorOf(e);
            var merged = MathF.Abs(sin[j]) < colinearBound
                ? R(R((float)(1 - t) * v0[e], dtype) + R((float)t * v1[e], dtype), dtype)
                : R(R(R(s0[j] * v0[e], dtype) + R(s1[j] * v1[e], dtype), dtype) / sin[j], dtype);
            expected[e] = withBase ? R(b[e] + merged, dtype) : merged;
        }
        AssertSame(expected, got);
        var once = Run(strategy, withBase ? b : null, [x0, x1], weights, global, shape: shape).Select(v => R(v, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, n), e => Bits(once[e]) != Bits(expected[e]));
    }

    public static TheoryData<ScalarType, bool, bool, bool> MultislerpCases => new()
    {
        { ScalarType.BFloat16, true, true, false },
        { ScalarType.Float16, true, true, false },
        { ScalarType.BFloat16, false, true, false },
        { ScalarType.Float16, false, false, false },
        { ScalarType.BFloat16, true, false, false },
        { ScalarType.BFloat16, true, true, true },
        { ScalarType.Float16, false, true, true },
    };

    /// <summary>
    /// mergekit: <c>v = stack(x_i) - base</c>; <c>w = tensor(weights, dtype)</c>, divided by <c>w.sum()</c>;
    /// <c>norms = norm(v, -1)</c>; <c>u = v / (norms + eps)</c>; <c>mean = (u * w).sum(0)</c>; below eps the two models'
    /// weighted sum (antipodal: equal weights and opposite task vectors); else <c>mean / norm(mean)</c>,
    /// <c>dots = (u * mean).sum(-1)</c>, <c>r = ((u - dots * mean) * w).sum(0)</c>, <c>n = norm(r) + eps</c>,
    /// <c>(mean cos n + r (sin n / n)) (norms * w).sum()</c>; plus the base. Sums over the models (and over the k weights)
    /// accumulate in float32 in model order and round once. In float16 eps rounds to 0, so antipodal models are not caught
    /// and give NaN (0 / 0), as in mergekit.
    /// </summary>
    [Theory]
    [MemberData(nameof(MultislerpCases))]
    public void Multislerp_rounds_every_operation_as_mergekit(ScalarType dtype, bool withBase, bool normalize, bool antipodal)
    {
        const int rows = 20, columns = 50;
        long[] shape = [rows, columns];
        var n = rows * columns;
        var (b, xs) = MultislerpInputs(dtype, n, antipodal, withBase);
        var k = xs.Length;
        double[] weights = antipodal ? [0.7, 0.7] : [0.3, 0.45, 0.8];
        const double eps = 1e-8;
        var global = new Dictionary<string, object> { ["normalize_weights"] = normalize, ["eps"] = eps };
        var strategy = new MultiSlerpStrategy();
        var got = Run(strategy, withBase ? b : null, xs, weights, global, shape: shape, compute: dtype);

        var epsilon = (float)eps;
        var w = weights.Select(x => R((float)x, dtype)).ToArray();
        if (normalize)
        {
            var total = R(w.Aggregate(0f, (sum, x) => sum + x), dtype);
            w = [.. w.Select(x => R(x / total, dtype))];
        }
        var v = xs.Select(x => withBase ? x.Select((value, e) => R(value - b[e], dtype)).ToArray() : x).ToArray();
        float[] Rows(float[][] values, Func<Tensor, Tensor> reduce)
        {
            using var wide = tensor(values.SelectMany(x => x).ToArray(), [values.Length, n]);
            using var narrow = wide.to(dtype);
            using var reduced = reduce(narrow);
            using var back = reduced.to(ScalarType.Float32);
            return back.reshape(-1).data<float>().ToArray();
        }
        float Norm(float[] values) => Rows([values], x => linalg.vector_norm(x))[0];
        float[] SumOverModels(float[][] values) =>
            [.. Enumerable.Range(0, n).Select(e => R(Enumerable.Range(0, k).Aggregate(0f, (sum, i) => sum + R(values[i][e] * w[i], dtype)), dtype))];
        var norms = Rows(v, x => linalg.vector_norm(x, 2, [-1L], keepdim: true));
        var u = v.Select((x, i) => x.Select(value => R(value / R(norms[i] + epsilon, dtype), dtype)).ToArray()).ToArray();
        var mean = SumOverModels(u);
        var meanNorm = Norm(mean);
        float[] expected;
        // eps = 1e-8 is 0 in float16: the comparison never holds there, and antipodal models give 0 / 0 (NaN) as in mergekit.
        Assert.Equal(antipodal && dtype == ScalarType.BFloat16, meanNorm < R(epsilon, dtype));
        if (meanNorm < R(epsilon, dtype))
        {
            expected = [.. Enumerable.Range(0, n).Select(e => R(R(v[0][e] * w[0], dtype) + R(v[1][e] * w[1], dtype), dtype))];
        }
        else
        {
            mean = [.. mean.Select(x => R(x / meanNorm, dtype))];
            var dots = Rows([.. u.Select(x => x.Select((value, e) => R(value * mean[e], dtype)).ToArray())], x => x.sum(-1L, keepdim: true));
            var tangent = SumOverModels([.. u.Select((x, i) => x.Select((value, e) => R(value - R(dots[i] * mean[e], dtype), dtype)).ToArray())]);
            var tangentNorm = R(Norm(tangent) + epsilon, dtype);
            var cos = F(Math.Cos(tangentNorm), dtype);
            var sinRatio = R(F(Math.Sin(tangentNorm), dtype) / tangentNorm, dtype);
            var averageNorm = R(Enumerable.Range(0, k).Aggregate(0f, (sum, i) => sum + R(norms[i] * w[i], dtype)), dtype);
            expected = [.. Enumerable.Range(0, n).Select(e => R(R(R(mean[e] * cos, dtype) + R(tangent[e] * sinRatio, dtype), dtype) * averageNorm, dtype))];
        }
        if (withBase)
        {
            expected = [.. expected.Select((x, e) => R(x + b[e], dtype))];
        }
        AssertSame(expected, got);
        if (!antipodal) // the fallback's w v_0 + w (-v_0) is 0 in any precision
        {
            var once = Run(strategy, withBase ? b : null, xs, weights, global, shape: shape).Select(x => R(x, dtype)).ToArray();
            Assert.Contains(Enumerable.Range(0, n), e => Bits(once[e]) != Bits(expected[e]));
        }
    }

    public static TheoryData<ScalarType, bool, bool, int> KarcherCases => new()
    {
        { ScalarType.BFloat16, true, false, 10 },
        { ScalarType.Float16, true, false, 10 },
        { ScalarType.BFloat16, false, false, 10 },
        { ScalarType.Float16, false, true, 10 },
        { ScalarType.BFloat16, true, true, 3 },
        { ScalarType.BFloat16, false, false, 0 },
    };

    /// <summary>
    /// mergekit (<c>karcher_merge_tensors</c>), the inputs being the models and then the base: float32 norms
    /// <c>n_i = norm(t.float())</c> as Python floats; <c>u_i = t / n</c> (the float32 norm) or zeros; the inputs with
    /// n_i &gt; tol; <c>u = sum a u_i</c> (a = 1 / valid count as a float32, each addition rounded), divided by its float32
    /// norm; then max_iter times: per input <c>dot = dot(u, u_i).clamp(-1, 1)</c> (torch's dot in the dtype),
    /// <c>theta = acos(dot)</c>, skipped under tol, <c>T += a * (theta / sin theta) * (u_i - dot * u)</c>; stop when
    /// <c>|T|</c> (float32) &lt; tol; <c>u = cos|T| * u + sin|T| * (T / |T|)</c> (the float32 cosine and sine rounded to the
    /// dtype as first operands, T divided by the float32 norm), divided by its float32 norm; finally
    /// <c>(sum n_i / k) * u</c>. With <paramref name="zeroModel"/> one model is all zeros (left out, its norm 0 counted in
    /// the scale).
    /// </summary>
    [Theory]
    [MemberData(nameof(KarcherCases))]
    public void Karcher_rounds_every_operation_as_mergekit(ScalarType dtype, bool withBase, bool zeroModel, int maxIterations)
    {
        const int rows = 20, columns = 50;
        long[] shape = [rows, columns];
        var n = rows * columns;
        var (b, xs) = KarcherInputs(dtype, n);
        if (zeroModel)
        {
            xs[1] = new float[n];
        }
        const double tol = 1e-5;
        var global = new Dictionary<string, object> { ["max_iter"] = (long)maxIterations, ["tol"] = tol };
        var strategy = new KarcherStrategy();
        var got = Run(strategy, withBase ? b : null, xs, global: global, shape: shape, compute: dtype);

        float[][] inputs = withBase ? [.. xs, b] : xs;
        var k = inputs.Length;
        var alpha = 1.0 / k;
        float Norm32(float[] values)
        {
            using var x = tensor(values, [values.Length]);
            using var norm = linalg.vector_norm(x);
            return norm.item<float>();
        }
        float Dot(float[] x, float[] y)
        {
            using var wideX = tensor(x, [x.Length]);
            using var wideY = tensor(y, [y.Length]);
            using var narrowX = wideX.to(dtype);
            using var narrowY = wideY.to(dtype);
            using var dot = narrowX.dot(narrowY);
            using var back = dot.to(ScalarType.Float32);
            return back.item<float>();
        }
        var norms = inputs.Select(Norm32).ToArray();
        var units = inputs.Select((x, i) => norms[i] == 0 ? new float[n] : x.Select(v => R(v / norms[i], dtype)).ToArray()).ToArray();
        var valid = Enumerable.Range(0, k).Where(i => norms[i] > tol).ToArray();
        Assert.Equal(zeroModel ? k - 1 : k, valid.Length);
        var weight = (float)(alpha / valid.Aggregate(0.0, (sum, _) => sum + alpha));
        var u = new float[n];
        foreach (var i in valid)
        {
            u = [.. u.Select((v, e) => R(v + R(weight * units[i][e], dtype), dtype))];
        }
        var normU = Norm32(u);
        u = [.. u.Select(v => R(v / normU, dtype))];
        var iterations = 0;
        for (; iterations < maxIterations; iterations++)
        {
            var step = new float[n];
            foreach (var i in valid)
            {
                var dot = Math.Clamp(Dot(u, units[i]), -1f, 1f);
                var theta = F(Math.Acos(dot), dtype);
                if (theta < tol)
                {
                    continue;
                }
                var coefficient = R(weight * R(theta / F(Math.Sin(theta), dtype), dtype), dtype);
                step = [.. step.Select((v, e) => R(v + R(coefficient * R(units[i][e] - R(dot * u[e], dtype), dtype), dtype), dtype))];
            }
            var stepNorm = Norm32(step);
            if (stepNorm < tol)
            {
                break;
            }
            var cos = F(Math.Cos(stepNorm), dtype);
            var sin = F(Math.Sin(stepNorm), dtype);
            u = [.. u.Select((v, e) => R(R(cos * v, dtype) + R(sin * R(step[e] / stepNorm, dtype), dtype), dtype))];
            var length = Norm32(u);
            if (length > tol)
            {
                u = [.. u.Select(v => R(v / length, dtype))];
            }
        }
        Assert.True(maxIterations == 0 || iterations > 0, "the iteration was not exercised");
        var scale = (float)norms.Aggregate(0.0, (sum, norm) => sum + (alpha * norm));
        var expected = u.Select(v => R(scale * v, dtype)).ToArray();
        AssertSame(expected, got);
        var once = Run(strategy, withBase ? b : null, xs, global: global, shape: shape).Select(x => R(x, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, n), e => Bits(once[e]) != Bits(expected[e]));
    }

    public static TheoryData<ScalarType, int, int> ArceeFusionCases => new()
    {
        { ScalarType.BFloat16, 40, 50 },
        { ScalarType.Float16, 40, 50 },
        { ScalarType.BFloat16, 1, 700 },
        { ScalarType.Float16, 1, 700 },
    };

    /// <summary>
    /// mergekit (arcee_fusion, a the base, b the model): <c>p = softmax(b, -1) + 1e-8</c>, <c>q</c> the same of a;
    /// <c>kl = sum(p * log(p / q), -1)</c>; importance <c>|b - a| * kl</c>; sorted, the values at indices
    /// <c>long(q * (n - 1))</c> (float32 products) for q = 0.5, 0.25, 0.75; threshold <c>median + 1.5 * (q3 - q1)</c>;
    /// <c>a + (b - a) * (importance &gt;= threshold).float()</c>, float32. The softmax (a per-row reduction) and the row
    /// sums are taken from torch; the rest is emulated. The 40 x 50 tensors have a row of large values whose softmax
    /// underflows in float16 (zeros in p and q after + 1e-8, which is 0 in float16: a NaN divergence, importances NaN, sorted last, never selected).
    /// </summary>
    [Theory]
    [MemberData(nameof(ArceeFusionCases))]
    public void Arcee_fusion_rounds_every_operation_as_mergekit(ScalarType dtype, int rows, int columns)
    {
        long[] shape = rows == 1 ? [columns] : [rows, columns];
        var n = rows * columns;
        var (a, b) = ArceeFusionInputs(dtype, rows, columns);
        var strategy = new ArceeFusionStrategy();
        var got = Run(strategy, a, [b], shape: shape, compute: dtype);

        float[] FromTorch(float[] values, Func<Tensor, Tensor> operation)
        {
            using var wide = tensor(values, shape);
            using var narrow = wide.to(dtype);
            using var result = operation(narrow);
            using var back = result.to(ScalarType.Float32);
            return back.reshape(-1).data<float>().ToArray();
        }
        var eps = 1e-8f;
        var p = FromTorch(b, x => nn.functional.softmax(x, -1L)).Select(v => R(v + eps, dtype)).ToArray();
        var q = FromTorch(a, x => nn.functional.softmax(x, -1L)).Select(v => R(v + eps, dtype)).ToArray();
        var kl = FromTorch([.. p.Select((v, e) => R(v * F(Math.Log(R(v / q[e], dtype)), dtype), dtype))], x => x.sum(-1L));
        var importance = Enumerable.Range(0, n).Select(e => R(MathF.Abs(R(b[e] - a[e], dtype)) * kl[e / columns], dtype)).ToArray();
        Assert.Equal(dtype == ScalarType.Float16 && rows > 1, kl.Any(float.IsNaN)); // the large row's softmax underflows in float16
        // Ascending with NaN last, as torch sorts.
        var sorted = importance.OrderBy(v => float.IsNaN(v) ? 1 : 0).ThenBy(v => float.IsNaN(v) ? 0f : v).ToArray();
        var last = (float)(n - 1);
        float At(float quantile) => sorted[(long)(quantile * last)];
        var threshold = R(At(0.5f) + R(1.5f * R(At(0.75f) - At(0.25f), dtype), dtype), dtype);
        var selected = importance.Select(v => v >= threshold).ToArray();
        Assert.InRange(selected.Count(x => x), 1, n / 2);
        var expected = Enumerable.Range(0, n).Select(e => a[e] + (R(b[e] - a[e], dtype) * (selected[e] ? 1f : 0f))).ToArray();
        AssertSame(expected, got);
        var once = Run(strategy, a, [b], shape: shape);
        Assert.Contains(Enumerable.Range(0, n), e => Bits(once[e]) != Bits(expected[e]));
    }

    [Fact]
    public void Interpolations_that_round_like_mergekit_say_so()
    {
        Assert.True(new ArceeFusionStrategy().Traits.RoundsIntermediates);
        Assert.True(new KarcherStrategy().Traits.RoundsIntermediates);
        Assert.True(new NuSlerpStrategy().Traits.RoundsIntermediates);
        Assert.True(new MultiSlerpStrategy().Traits.RoundsIntermediates);
    }

    /// <summary>
    /// A base and two models of <paramref name="vectors"/> x <paramref name="length"/> in the dtype, one vector per row:
    /// most rows with task vectors sharing a component (cosines near 0.5), then the awkward ones: equal task vectors
    /// (colinear: sin theta 0 in bfloat16, a division by 0 in float16, where mergekit's bound 1e-8 is 0), opposite ones,
    /// one model equal to the base (norm 0, floored), one a multiple of the other, signed zeros, subnormal and large
    /// values.
    /// </summary>
    private static (float[] Base, float[] X0, float[] X1) NuslerpInputs(ScalarType dtype, int vectors, int length)
    {
        var rng = new Random(53);
        float U(double scale) => (float)(scale * (rng.NextDouble() - 0.5));
        var n = vectors * length;
        var b = new float[n];
        var x0 = new float[n];
        var x1 = new float[n];
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(5) : BitConverter.UInt32BitsToSingle(0x00050000u);
        for (var r = 0; r < vectors; r++)
        {
            for (var c = 0; c < length; c++)
            {
                var e = (r * length) + c;
                b[e] = R(U(1), dtype);
                var shared = U(0.05);
                var d0 = shared + U(0.05);
                var d1 = shared + U(0.05);
                (d0, d1) = r switch
                {
                    0 => (d0, d0), // equal
                    1 => (d0, -d0), // opposite
                    2 => (0f, d1), // the first model is the base
                    3 => (d0, 2 * d0), // a multiple
                    4 => (c % 3 == 0 ? 0f : d0, c % 2 == 0 ? 0f : d1), // zeros in places
                    _ => (d0, d1),
                };
                x0[e] = R(b[e] + d0, dtype);
                x1[e] = R(b[e] + d1, dtype);
            }
        }
        // Awkward single entries in the generic rows.
        var huge = R(dtype == ScalarType.Float16 ? 2000f : 1e30f, dtype);
        (float Base, float X0, float X1)[] special = [(0f, -0f, 0f), (-0f, -0f, -0f), (tiny, -tiny, tiny), (0.5f, huge, -huge), (-0f, 0f, tiny)];
        for (var s = 0; s < special.Length; s++)
        {
            var e = ((6 + s) * length) + (s * 3 % length);
            (b[e], x0[e], x1[e]) = special[s];
        }
        return (b, x0, x1);
    }

    /// <summary>
    /// A base and three models in the dtype, task vectors sharing a component, with awkward entries: signed zeros, equal
    /// values, a subnormal, large values; or (<paramref name="antipodal"/>) two models whose task vectors (around the base,
    /// or around 0) are exactly opposite.
    /// </summary>
    private static (float[] Base, float[][] Models) MultislerpInputs(ScalarType dtype, int n, bool antipodal, bool aroundBase)
    {
        var rng = new Random(61);
        float U(double scale) => (float)(scale * (rng.NextDouble() - 0.5));
        var b = Enumerable.Range(0, n).Select(_ => R(U(1), dtype)).ToArray();
        var shared = Enumerable.Range(0, n).Select(_ => U(0.04)).ToArray();
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(3) : BitConverter.UInt32BitsToSingle(0x00030000u);
        (float Base, float X0, float X1, float X2)[] special =
        [
            (0f, -0f, 0f, -0f), (-0f, -0f, -0f, -0f), (0.5f, 0.5f, 0.5f, 0.5f), (tiny, -tiny, tiny, 0f),
            (R(100f, dtype), R(104f, dtype), R(100f, dtype), R(96f, dtype)),
        ];
        if (antipodal)
        {
            // Values with few bits, so that x_1 - base is exactly -(x_0 - base) in either dtype.
            float[] bases = [0f, 0.5f, -0.5f, 0.25f, -0.25f];
            var grid = Enumerable.Range(0, n).Select(_ => bases[rng.Next(bases.Length)]).ToArray();
            var d = Enumerable.Range(0, n).Select(_ => rng.Next(-7, 8) / 128f).ToArray();
            var x0 = grid.Select((x, e) => x + d[e]).ToArray();
            return (grid, [x0, [.. x0.Select((x, e) => aroundBase ? grid[e] - d[e] : -x)]]);
        }
        var xs = Enumerable.Range(0, 3).Select(_ => b.Select((x, e) => R(x + shared[e] + U(0.04), dtype)).ToArray()).ToArray();
        for (var s = 0; s < special.Length; s++)
        {
            var e = 11 + (s * 97);
            (b[e], xs[0][e], xs[1][e], xs[2][e]) = special[s];
        }
        return (b, xs);
    }

    /// <summary>
    /// A base and three models in the dtype, the directions apart (cosines near 0.4) and of different norms, with a few
    /// awkward entries: signed zeros, a subnormal, large values.
    /// </summary>
    private static (float[] Base, float[][] Models) KarcherInputs(ScalarType dtype, int n)
    {
        var rng = new Random(67);
        float U(double scale) => (float)(scale * (rng.NextDouble() - 0.5));
        var shared = Enumerable.Range(0, n).Select(_ => U(1)).ToArray();
        float[] Input(double scale) => [.. shared.Select(x => R((float)(scale * (x + U(1.2))), dtype))];
        var b = Input(0.5);
        var xs = new[] { Input(1), Input(0.3), Input(2) };
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(3) : BitConverter.UInt32BitsToSingle(0x00030000u);
        (float Base, float X0, float X1, float X2)[] special =
        [
            (0f, -0f, 0f, -0f), (-0f, -0f, -0f, -0f), (tiny, -tiny, tiny, 0f), (R(30f, dtype), R(-30f, dtype), R(20f, dtype), R(25f, dtype)),
        ];
        for (var s = 0; s < special.Length; s++)
        {
            var e = 5 + (s * 101);
            (b[e], xs[0][e], xs[1][e], xs[2][e]) = special[s];
        }
        return (b, xs);
    }

    /// <summary>
    /// A base and a model in the dtype: small changes almost everywhere, large ones at about one entry in ten (the
    /// outliers), equal entries, signed zeros; with several rows, one row of large values (softmax underflow in float16).
    /// </summary>
    private static (float[] A, float[] B) ArceeFusionInputs(ScalarType dtype, int rows, int columns)
    {
        var rng = new Random(71);
        float U(double scale) => (float)(scale * (rng.NextDouble() - 0.5));
        var n = rows * columns;
        var a = Enumerable.Range(0, n).Select(_ => R(U(2), dtype)).ToArray();
        var b = a.Select(x => R(x + (rng.Next(10) == 0 ? U(1) : rng.Next(8) == 0 ? 0f : U(0.02)), dtype)).ToArray();
        (float A, float B)[] special = [(0f, -0f), (-0f, 0f), (-0f, -0f), (0.5f, 0.5f), (-0f, 0.25f), (0f, -0.25f)];
        for (var s = 0; s < special.Length; s++)
        {
            (a[3 + (s * 7)], b[3 + (s * 7)]) = special[s];
        }
        if (rows > 1)
        {
            for (var c = 0; c < columns; c++)
            {
                var e = (5 * columns) + c;
                a[e] = R(U(60), dtype);
                b[e] = R(a[e] + U(2), dtype);
            }
        }
        return (a, b);
    }

    /// <summary>The three arrays of <paramref name="rows"/> x <paramref name="columns"/> transposed.</summary>
    private static (float[], float[], float[]) Transposed((float[] A, float[] B, float[] C) values, int rows, int columns)
    {
        float[] T(float[] x) => [.. Enumerable.Range(0, x.Length).Select(e => x[(e % rows * columns) + (e / rows)])];
        return (T(values.A), T(values.B), T(values.C));
    }

    /// <summary>A function's double-precision value rounded to float32 (as torch's float32 kernel gives it) and then to the dtype.</summary>
    private static float F(double value, ScalarType dtype) => R((float)value, dtype);

    /// <summary>Bit for bit, except that any NaN equals any NaN (their payloads are the hardware's, not mergekit's).</summary>
    private static void AssertSame(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var e = 0; e < expected.Length; e++)
        {
            if (float.IsNaN(expected[e]) && float.IsNaN(actual[e]))
            {
                continue;
            }
            if (Bits(expected[e]) != Bits(actual[e]))
            {
                Assert.Fail($"element {e}: expected {expected[e]:R} (0x{Bits(expected[e]):X8}), got {actual[e]:R} (0x{Bits(actual[e]):X8})");
            }
        }
    }
}
