using SensMerging.Host.Demo;

namespace SensMerging.Host.Tests.Demo;

public sealed class RetentionTableTests
{
    private static readonly string[] Tasks = ["math", "code"];

    private static ModelScores Scores(double math, double code) =>
        new("m", new Dictionary<string, double> { ["math"] = math, ["code"] = code }, new Dictionary<string, double> { ["math"] = 1, ["code"] = 1 });

    private static DemoRow Row(string label, params ModelScores[] perSeed) =>
        new(label, "", perSeed, label.StartsWith("merged", StringComparison.Ordinal) ? ["m-1"] : []);

    [Fact]
    public void Retention_is_the_share_of_each_experts_gain_kept_per_seed_and_averaged_over_tasks()
    {
        // Seed 0: base 0.2/0.4, experts 0.9 (math) and 0.8 (code); seed 1: base 0.3/0.3, experts 0.8 and 0.5.
        DemoRow[] rows =
        [
            Row("base", Scores(0.2, 0.4), Scores(0.3, 0.3)),
            Row("expert:math", Scores(0.9, 0.1), Scores(0.8, 0.2)),
            Row("expert:code", Scores(0.1, 0.8), Scores(0.2, 0.5)),
            Row("merged", Scores(0.55, 0.7), Scores(0.3, 0.35)),
        ];
        var table = new RetentionTable(Tasks, rows);
        var math = table.Of(rows[3], "math")!;
        var code = table.Of(rows[3], "code")!;
        Assert.Equal(0.35 / 0.7, math[0], 12);
        Assert.Equal(0.0, math[1], 12);
        Assert.Equal(0.3 / 0.4, code[0], 12);
        Assert.Equal(0.05 / 0.2, code[1], 12);
        var average = table.AverageOf(rows[3])!;
        Assert.Equal(((0.35 / 0.7) + (0.3 / 0.4)) / 2, average[0], 12);
        Assert.Equal(((0.0) + (0.05 / 0.2)) / 2, average[1], 12);
        Assert.Equal("70 ± 14%", DemoReport.RetentionCell([0.6, 0.8]));
        Assert.Null(table.Of(rows[0], "math"));
        Assert.Null(table.AverageOf(rows[1]));
        Assert.Equal("—", DemoReport.RetentionCell(null));
    }

    [Fact]
    public void An_expert_that_does_not_beat_the_base_gives_no_retention_figure()
    {
        DemoRow[] rows =
        [
            Row("base", Scores(0.5, 0.4)),
            Row("expert:math", Scores(0.5, 0.1)),
            Row("expert:code", Scores(0.1, 0.8)),
            Row("merged", Scores(0.6, 0.6)),
        ];
        var table = new RetentionTable(Tasks, rows);
        Assert.True(double.IsNaN(table.Of(rows[3], "math")![0]));
        Assert.Equal("n/a", DemoReport.RetentionCell(table.AverageOf(rows[3])));
        Assert.Equal("50%", DemoReport.RetentionCell(table.Of(rows[3], "code")));
    }
}
