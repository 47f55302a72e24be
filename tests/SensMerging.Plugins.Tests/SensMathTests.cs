using SensMerging.Decorators.Sens;

namespace SensMerging.Plugins.Tests;

public sealed class SensMathTests
{
    private static readonly double[][] S =
    [
        [0.5, 2.0, 1.0, 0.25],
        [1.5, 0.5, 0.5, 1.0],
        [3.0, 1.0, 2.0, 0.5],
    ];

    private static readonly double[][] G =
    [
        [0.0, 2.0, 4.0],
        [1.0, 0.0, 3.0],
        [6.0, 5.0, 0.0],
    ];

    [Fact]
    public void Alpha_IsEachRowOverItsL2Norm()
    {
        var alpha = SensMath.Alpha(S);
        // Row 0: norm sqrt(0.25 + 4 + 1 + 0.0625) = sqrt(5.3125)
        var n0 = Math.Sqrt(5.3125);
        Assert.Equal([0.5 / n0, 2.0 / n0, 1.0 / n0, 0.25 / n0], alpha[0], new Tolerance(1e-15));
        for (var i = 0; i < S.Length; i++)
        {
            Assert.Equal(1.0, Math.Sqrt(alpha[i].Sum(a => a * a)), 12);
        }
    }

    [Fact]
    public void Alpha_ZeroRow_GivesZeros()
    {
        var alpha = SensMath.Alpha([[0.0, 0.0], [3.0, 4.0]]);
        Assert.Equal([0.0, 0.0], alpha[0]);
        Assert.Equal([0.6, 0.8], alpha[1], new Tolerance(1e-15));
    }

    [Fact]
    public void Transferability_BothReadings_MatchHandComputation()
    {
        // Off-diagonal mean = (2 + 4 + 1 + 3 + 6 + 5) / 6 = 3.5
        var alignment = SensMath.Transferability(G, TransferReading.Alignment);
        Assert.Equal(Math.Exp(-2 / 3.5) + Math.Exp(-4 / 3.5), alignment[0], 14);
        Assert.Equal(Math.Exp(-1 / 3.5) + Math.Exp(-3 / 3.5), alignment[1], 14);
        Assert.Equal(Math.Exp(-6 / 3.5) + Math.Exp(-5 / 3.5), alignment[2], 14);

        var distance = SensMath.Transferability(G, TransferReading.Distance);
        Assert.Equal([6.0, 4.0, 11.0], distance);

        // Expert 1 is closest to the others: highest tau under alignment, lowest under distance.
        var tauAlignment = SensMath.Tau(alignment);
        var tauDistance = SensMath.Tau(distance);
        Assert.Equal(1, Array.IndexOf(tauAlignment, tauAlignment.Max()));
        Assert.Equal(1, Array.IndexOf(tauDistance, tauDistance.Min()));
        Assert.Equal(1.0, tauAlignment.Sum(), 14);
        Assert.Equal([6 / 21.0, 4 / 21.0, 11 / 21.0], tauDistance, new Tolerance(1e-15));
    }

    [Fact]
    public void Transferability_AllDistancesZero_GivesEqualTauInBothReadings()
    {
        double[][] zero = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
        foreach (var reading in new[] { TransferReading.Alignment, TransferReading.Distance })
        {
            var tau = SensMath.Tau(SensMath.Transferability(zero, reading));
            Assert.All(tau, t => Assert.Equal(1.0 / 3, t));
        }
    }

    [Fact]
    public void Transferability_RejectsNegativeOrNonSquareTables()
    {
        Assert.Throws<ArgumentException>(() => SensMath.Transferability([[0, -1], [1, 0]], TransferReading.Alignment));
        Assert.Throws<ArgumentException>(() => SensMath.Transferability([[0, 1, 2], [1, 0, 2]], TransferReading.Distance));
    }

    [Fact]
    public void Compute_MatchesIndependentNaiveFormulas()
    {
        const double T = 3.0;
        var result = SensMath.Compute(S, G, 3, 4, TransferReading.Alignment, T);

        // Independent computation, straight from the spec (no max subtraction, no shared code).
        var k = 3;
        var alpha = new double[k, 4];
        for (var i = 0; i < k; i++)
        {
            var norm = Math.Sqrt(S[i].Sum(x => x * x));
            for (var l = 0; l < 4; l++)
            {
                alpha[i, l] = S[i][l] / norm;
            }
        }
        var offDiagonal = new List<double>();
        for (var i = 0; i < k; i++)
        {
            for (var j = 0; j < k; j++)
            {
                if (i != j)
                {
                    offDiagonal.Add(G[i][j]);
                }
            }
        }
        var mean = offDiagonal.Average();
        var t = new double[k];
        for (var i = 0; i < k; i++)
        {
            for (var j = 0; j < k; j++)
            {
                if (i != j)
                {
                    t[i] += Math.Exp(-G[i][j] / mean);
                }
            }
        }
        var tau = t.Select(x => x / t.Sum()).ToArray();
        for (var l = 0; l < 4; l++)
        {
            var denominator = Enumerable.Range(0, k).Sum(m => Math.Exp(alpha[m, l] * tau[m] / T));
            for (var i = 0; i < k; i++)
            {
                var sigma = Math.Exp(alpha[i, l] * tau[i] / T) / denominator;
                Assert.Equal(alpha[i, l], result.Alpha[i][l], 14);
                Assert.Equal(sigma, result.Sigma[i][l], 14);
                Assert.Equal(k * sigma, result.Coefficients[i][l], 13);
            }
        }
        Assert.Equal(t, result.Transferability, new Tolerance(1e-14));
        Assert.Equal(tau, result.Tau, new Tolerance(1e-14));
    }

    [Theory]
    [InlineData(2, 1)]
    [InlineData(3, 7)]
    [InlineData(7, 2)]
    public void Coefficients_AverageOneOverExperts_InEveryGroup(int experts, int seed)
    {
        var rng = new Random(seed);
        var s = Enumerable.Range(0, experts).Select(_ => Enumerable.Range(0, 6).Select(_ => rng.NextDouble() * 10).ToArray()).ToArray();
        var g = Enumerable.Range(0, experts).Select(i => Enumerable.Range(0, experts).Select(j => i == j ? 0 : rng.NextDouble() * 50).ToArray()).ToArray();
        foreach (var reading in new[] { TransferReading.Alignment, TransferReading.Distance })
        {
            var result = SensMath.Compute(s, g, experts, 6, reading, 0.05);
            for (var l = 0; l < 6; l++)
            {
                Assert.Equal(1.0, Enumerable.Range(0, experts).Average(i => result.Coefficients[i][l]), 12);
                Assert.Equal(1.0, Enumerable.Range(0, experts).Sum(i => result.Sigma[i][l]), 12);
            }
            // The low temperature makes the coefficients differ: the test would fail on a constant answer.
            Assert.True(result.Coefficients.SelectMany(r => r).Max() - result.Coefficients.SelectMany(r => r).Min() > 0.01);
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(49)]
    public void UniformScores_GiveCoefficientOneExactly(int experts)
    {
        var s = Enumerable.Range(0, experts).Select(_ => new[] { 0.3, 1.7, 2.9 }).ToArray();
        var g = Enumerable.Range(0, experts).Select(i => Enumerable.Range(0, experts).Select(j => i == j ? 0.0 : 4.25).ToArray()).ToArray();
        foreach (var reading in new[] { TransferReading.Alignment, TransferReading.Distance })
        {
            var result = SensMath.Compute(s, g, experts, 3, reading, 2.0);
            Assert.All(result.Coefficients.SelectMany(r => r), c => Assert.Equal(1.0, c));
        }
    }

    [Fact]
    public void AblationSwitches_DefineAlphaOneAndTauUniform_BothOffGiveOneExactly()
    {
        // Task scaling off: alpha = 1, coefficients follow tau only (same in every group).
        var crossOnly = SensMath.Compute(null, G, 3, 4, TransferReading.Distance, 0.1);
        Assert.All(crossOnly.Alpha.SelectMany(r => r), a => Assert.Equal(1.0, a));
        for (var l = 1; l < 4; l++)
        {
            Assert.Equal(crossOnly.Coefficients[2][0], crossOnly.Coefficients[2][l]);
        }
        Assert.True(crossOnly.Coefficients[2][0] > 1 && crossOnly.Coefficients[1][0] < 1); // tau: 11/21 > 6/21 > 4/21

        // Cross scaling off: tau = 1/K, coefficients follow alpha only.
        var taskOnly = SensMath.Compute(S, null, 3, 4, TransferReading.Alignment, 0.1);
        Assert.All(taskOnly.Tau, t => Assert.Equal(1.0 / 3, t));
        var alpha = SensMath.Alpha(S);
        for (var l = 0; l < 4; l++)
        {
            var best = Enumerable.Range(0, 3).MaxBy(i => alpha[i][l]);
            Assert.Equal(best, Enumerable.Range(0, 3).MaxBy(i => taskOnly.Coefficients[i][l]));
        }

        // Both off: exactly 1, for any expert count.
        foreach (var k in new[] { 1, 2, 3, 5, 49 })
        {
            var off = SensMath.Compute(null, null, k, 4, TransferReading.Alignment, 2.0);
            Assert.All(off.Coefficients.SelectMany(r => r), c => Assert.Equal(1.0, c));
        }
    }

    [Fact]
    public void Combine_RejectsBadTemperatureAndShapes()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SensMath.Combine([[1.0]], [1.0], 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => SensMath.Combine([[1.0]], [1.0], double.NaN));
        Assert.Throws<ArgumentException>(() => SensMath.Combine([[1.0], [1.0, 2.0]], [0.5, 0.5], 1));
        Assert.Throws<ArgumentException>(() => SensMath.Compute([[double.NaN, 1.0]], null, 1, 2, TransferReading.Alignment, 1));
    }

    [Fact]
    public void SpreadScale_DividesEachGroupByItsPopulationSpread()
    {
        // Hand-made alpha and tau: group 0 spreads widely, group 1 narrowly; the spread scale makes both steer alike.
        double[][] alpha = [[0.9, 0.50], [0.3, 0.49], [0.6, 0.51]];
        double[] tau = [0.5, 0.3, 0.2];
        const double T = 0.7;
        var (_, c) = SensMath.Combine(alpha, tau, T, TemperatureScale.Spread);
        for (var l = 0; l < 2; l++)
        {
            var x = new[] { alpha[0][l] * tau[0], alpha[1][l] * tau[1], alpha[2][l] * tau[2] };
            var mean = (x[0] + x[1] + x[2]) / 3;
            var sd = Math.Sqrt((((x[0] - mean) * (x[0] - mean)) + ((x[1] - mean) * (x[1] - mean)) + ((x[2] - mean) * (x[2] - mean))) / 3);
            var e = x.Select(v => Math.Exp(v / (T * sd))).ToArray();
            for (var i = 0; i < 3; i++)
            {
                Assert.Equal(3 * e[i] / e.Sum(), c[i][l], 12);
            }
        }
        // Scale-free: multiplying every alpha by the same factor changes nothing.
        var scaled = alpha.Select(r => r.Select(a => a * 40).ToArray()).ToArray();
        var (_, c2) = SensMath.Combine(scaled, tau, T, TemperatureScale.Spread);
        for (var i = 0; i < 3; i++)
        {
            for (var l = 0; l < 2; l++)
            {
                Assert.Equal(c[i][l], c2[i][l], 12);
            }
        }
    }

    [Fact]
    public void SpreadScale_TiedGroupGivesOneExactly_AndAbsoluteIsTheDefault()
    {
        double[][] alpha = [[0.5, 0.9], [0.5, 0.1]];
        double[] tau = [0.5, 0.5];
        var (_, c) = SensMath.Combine(alpha, tau, 1.0, TemperatureScale.Spread);
        Assert.Equal(1.0, c[0][0]);
        Assert.Equal(1.0, c[1][0]);
        Assert.True(c[0][1] > 1.0 && c[1][1] < 1.0);
        var (_, absolute) = SensMath.Combine(alpha, tau, 1.0);
        var (_, explicitAbsolute) = SensMath.Combine(alpha, tau, 1.0, TemperatureScale.Absolute);
        Assert.Equal(explicitAbsolute, absolute);
        Assert.NotEqual(c[0][1], absolute[0][1]);
    }
}
