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

    [Fact]
    public void Interpolations_that_round_like_mergekit_say_so() => Assert.True(new NuSlerpStrategy().Traits.RoundsIntermediates);

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
