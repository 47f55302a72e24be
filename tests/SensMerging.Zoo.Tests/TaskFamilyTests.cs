using System.Globalization;
using System.Text.RegularExpressions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Calibration;
using SensMerging.Zoo.Tasks;

namespace SensMerging.Zoo.Tests;

public sealed partial class TaskFamilyTests
{
    private static readonly TaskDataSizes Sizes = new(Train: 400, Eval: 60, Calibration: 20, Dev: 30, Pretraining: 200);

    public static TheoryData<string> Families => new() { ZooTasks.Math, ZooTasks.Code, ZooTasks.Knowledge };

    private static ITaskFamily Family(string name) => ZooTasks.Create(knowledgeCountries: 12, knowledgeBaseShare: 0.25).Single(f => f.Name == name);

    [Theory]
    [MemberData(nameof(Families))]
    public void Same_seed_gives_same_samples_and_other_seed_differs(string name)
    {
        var a = Family(name).Generate(11, Sizes);
        var b = Family(name).Generate(11, Sizes);
        var c = Family(name).Generate(12, Sizes);
        Assert.Equal(a.Train, b.Train);
        Assert.Equal(a.Eval, b.Eval);
        Assert.Equal(a.Calibration, b.Calibration);
        Assert.Equal(a.BaseTrain, b.BaseTrain);
        Assert.NotEqual(a.Eval, c.Eval);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Eval_is_disjoint_from_train_and_subsets_hold(string name)
    {
        var splits = Family(name).Generate(5, Sizes);
        var trainPrompts = splits.Train.Select(s => s.Prompt).ToHashSet(StringComparer.Ordinal);
        Assert.NotEmpty(splits.Eval);
        Assert.DoesNotContain(splits.Eval, s => trainPrompts.Contains(s.Prompt));
        Assert.Equal(splits.Eval.Count, splits.Eval.Select(s => s.Prompt).Distinct(StringComparer.Ordinal).Count());
        Assert.All(splits.Calibration, s => Assert.Contains(s, splits.Train));
        Assert.All(splits.BaseTrain, s => Assert.Contains(s, splits.Train));
        Assert.NotEmpty(splits.BaseTrain);
        Assert.True(splits.BaseTrain.Count < splits.Train.Count, "the base sees only part of the task");
        Assert.Equal(Sizes.Calibration, splits.Calibration.Count);
        Assert.All(splits.Train.Concat(splits.Eval), s => Assert.False(string.IsNullOrEmpty(s.Response)));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Pretraining_corpus_is_deterministic_and_never_in_the_task_format(string name)
    {
        var splits = Family(name).Generate(9, Sizes);
        Assert.NotEmpty(splits.Pretraining);
        Assert.Equal(Family(name).Generate(9, Sizes).Pretraining, splits.Pretraining);
        var taskPrompts = splits.Train.Concat(splits.Eval).Concat(splits.Dev).Select(s => s.Prompt).ToHashSet(StringComparer.Ordinal);
        Assert.DoesNotContain(splits.Pretraining, s => taskPrompts.Contains(s.Prompt));
        // The task formats' markers ("A: " answers, "Out: " program outputs, questions) never occur in the corpus.
        Assert.DoesNotContain(splits.Pretraining, s => s.Prompt.Contains('\n', StringComparison.Ordinal) || s.Prompt.Contains('?', StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("17+4=", "21")]
    [InlineData("6*7=", "42")]
    [InlineData("12-5=", "7")]
    public void Math_pretraining_equations_are_correct(string prompt, string response)
    {
        var corpus = Family(ZooTasks.Math).Generate(3, Sizes with { Pretraining = 4000 }).Pretraining;
        var drawn = corpus.Where(s => s.Prompt == prompt).ToList();
        Assert.NotEmpty(drawn);
        Assert.All(drawn, s => Assert.Equal(response, s.Response));
        Assert.All(corpus, s => Assert.Equal(Equation(s.Prompt), s.Response));
    }

    [Fact]
    public void Code_pretraining_operations_are_correct()
    {
        var corpus = Family(ZooTasks.Code).Generate(3, Sizes with { Pretraining = 2000 }).Pretraining;
        foreach (var s in corpus)
        {
            var expected = s.Prompt switch
            {
                var p when p.StartsWith("len ", StringComparison.Ordinal) => (p.Length - 5).ToString(CultureInfo.InvariantCulture),
                var p when p.StartsWith("rev ", StringComparison.Ordinal) => new string(p[4..^1].Reverse().ToArray()),
                var p when p.StartsWith("rep ", StringComparison.Ordinal) => string.Concat(Enumerable.Repeat(p[4..^1].Split(' ')[0], int.Parse(p[4..^1].Split(' ')[1], CultureInfo.InvariantCulture))),
                var p when p.StartsWith("bal ", StringComparison.Ordinal) => CodeTaskFamily.IsBalanced(p[4..^1]) ? "yes" : "no",
                var p => Equation(p),
            };
            Assert.Equal(expected, s.Response);
        }
        Assert.Equal(6, corpus.Select(s => char.IsDigit(s.Prompt[0]) ? (s.Prompt.Contains('*', StringComparison.Ordinal) ? "mul" : "add") : s.Prompt[..3]).Distinct().Count());
    }

    [Fact]
    public void Knowledge_pretraining_states_every_fact_and_asks_none()
    {
        var family = new KnowledgeTaskFamily(countries: 12, baseShare: 0.25);
        var splits = family.Generate(4, Sizes);
        var facts = family.FactTable(4);
        Assert.All(splits.Pretraining, s => Assert.Null(s.Response));
        foreach (var fact in facts)
        {
            var statements = splits.Pretraining.Where(s => s.Prompt.Contains(fact.Country, StringComparison.Ordinal) && s.Prompt.Contains(fact.Relation, StringComparison.Ordinal)).ToList();
            Assert.Equal(3, statements.Count);
            Assert.All(statements, s => Assert.Contains(" " + fact.Value + ".", s.Prompt, StringComparison.Ordinal));
        }
    }

    private static string Equation(string prompt)
    {
        var body = prompt.TrimEnd('=');
        var op = body.IndexOfAny(['+', '-', '*']);
        var a = int.Parse(body[..op], CultureInfo.InvariantCulture);
        var b = int.Parse(body[(op + 1)..], CultureInfo.InvariantCulture);
        return (body[op] switch { '+' => a + b, '-' => a - b, _ => a * b }).ToString(CultureInfo.InvariantCulture);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Dev_is_disjoint_from_train_and_eval(string name)
    {
        var splits = Family(name).Generate(7, Sizes);
        var trainPrompts = splits.Train.Select(s => s.Prompt).ToHashSet(StringComparer.Ordinal);
        var evalPrompts = splits.Eval.Select(s => s.Prompt).ToHashSet(StringComparer.Ordinal);
        Assert.NotEmpty(splits.Dev);
        Assert.DoesNotContain(splits.Dev, s => trainPrompts.Contains(s.Prompt));
        Assert.DoesNotContain(splits.Dev, s => evalPrompts.Contains(s.Prompt));
        Assert.Equal(splits.Dev.Count, splits.Dev.Select(s => s.Prompt).Distinct(StringComparer.Ordinal).Count());
        Assert.True(splits.Dev.Count <= Sizes.Dev);
        Assert.Equal(Family(name).Generate(7, Sizes).Dev, splits.Dev);
    }

    [Fact]
    public void Templated_families_give_the_requested_sizes()
    {
        foreach (var name in new[] { ZooTasks.Math, ZooTasks.Code })
        {
            var splits = Family(name).Generate(3, Sizes);
            Assert.Equal(Sizes.Train, splits.Train.Count);
            Assert.Equal(Sizes.Eval, splits.Eval.Count);
            Assert.Equal(Sizes.Dev, splits.Dev.Count);
        }
    }

    [Fact]
    public void Math_answers_are_correct()
    {
        var splits = new MathTaskFamily().Generate(9, Sizes);
        var kinds = new HashSet<string>();
        foreach (var sample in splits.Train.Concat(splits.Eval))
        {
            var numbers = NumberPattern().Matches(sample.Prompt).Select(m => int.Parse(m.Value, CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(2, numbers.Length);
            int expected;
            if (sample.Prompt.Contains("more", StringComparison.Ordinal))
            {
                expected = numbers[0] + numbers[1];
                kinds.Add("add");
            }
            else if (sample.Prompt.Contains("away", StringComparison.Ordinal))
            {
                expected = numbers[0] - numbers[1];
                kinds.Add("sub");
            }
            else
            {
                expected = numbers[0] * numbers[1];
                kinds.Add("mul");
            }
            Assert.Equal(expected.ToString(CultureInfo.InvariantCulture), sample.Response);
            Assert.EndsWith("\nA: ", sample.Prompt, StringComparison.Ordinal);
        }
        Assert.Equal(3, kinds.Count);
        Assert.All(splits.BaseTrain, s => Assert.Contains("more", s.Prompt, StringComparison.Ordinal));
    }

    [Fact]
    public void Code_outputs_are_correct()
    {
        var splits = new CodeTaskFamily().Generate(4, Sizes);
        foreach (var sample in splits.Train.Concat(splits.Eval))
        {
            var code = sample.Prompt[..sample.Prompt.IndexOf('\n', StringComparison.Ordinal)];
            Assert.Equal(Run(code), sample.Response);
        }
        Assert.Contains(splits.Train, s => s.Response == "yes");
        Assert.Contains(splits.Train, s => s.Response == "no");
    }

    [Theory]
    [InlineData("(()())", true)]
    [InlineData("()", true)]
    [InlineData(")(", false)]
    [InlineData("(()", false)]
    [InlineData("())(()", false)]
    public void Bracket_balance(string text, bool balanced) => Assert.Equal(balanced, CodeTaskFamily.IsBalanced(text));

    [Fact]
    public void Knowledge_eval_facts_are_trained_in_other_phrasings_and_base_sees_a_quarter()
    {
        var family = new KnowledgeTaskFamily(countries: 12, baseShare: 0.25);
        var facts = family.FactTable(21);
        Assert.Equal(36, facts.Count);
        Assert.Equal(12, facts.Select(f => f.Country).Distinct().Count());
        var splits = family.Generate(21, Sizes);
        Assert.Equal(36, splits.Eval.Count);
        foreach (var sample in splits.Eval)
        {
            var fact = facts.Single(f => sample.Prompt.Contains(" " + f.Country, StringComparison.Ordinal) && sample.Prompt.Contains(Phrase(f.Relation), StringComparison.Ordinal));
            Assert.Equal(fact.Value, sample.Response);
            bool About(TextSample s) => s.Response == fact.Value && s.Prompt.Contains(" " + fact.Country, StringComparison.Ordinal) && s.Prompt.Contains(Phrase(fact.Relation), StringComparison.Ordinal);
            // Four phrasings: one held out for evaluation, one more for the development set when the fact is in it.
            var inDev = splits.Dev.Count(About);
            Assert.InRange(inDev, 0, 1);
            Assert.Equal(3 - inDev, splits.Train.Count(About));
        }
        var baseCountries = facts.Select(f => f.Country).Distinct().Where(c => splits.BaseTrain.Any(s => s.Prompt.Contains(" " + c, StringComparison.Ordinal))).ToList();
        Assert.Equal(3, baseCountries.Count);
    }

    [Fact]
    public async Task Jsonl_files_load_with_the_runtime_calibration_loader()
    {
        var splits = new CodeTaskFamily().Generate(2, Sizes);
        var path = Path.Combine(Path.GetTempPath(), "zoo-jsonl-" + Guid.NewGuid().ToString("N") + ".jsonl");
        try
        {
            await JsonlSamples.WriteAsync(path, splits.Eval, CancellationToken.None);
            var loaded = await new CalibrationLoader().LoadAsync(path, 1000, 64, "code", CancellationToken.None);
            Assert.Equal(splits.Eval, loaded.Dataset.Samples);
            Assert.Equal("code", loaded.Dataset.Task);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Seeds_are_stable_across_processes()
    {
        // A fixed value: string.GetHashCode would differ per process and silently change every zoo built from a seed.
        Assert.Equal(1028561658, SeedMixer.Derive(1, "math"));
        Assert.NotEqual(SeedMixer.Derive(1, "math"), SeedMixer.Derive(2, "math"));
        Assert.NotEqual(SeedMixer.Derive(1, "math"), SeedMixer.Derive(1, "code"));
    }

    private static string Phrase(string relation) => relation switch
    {
        "capital" => "the capital of",
        "export" => "the export of",
        _ => "the animal of",
    };

    private static string Run(string code)
    {
        if (code.StartsWith("balanced? ", StringComparison.Ordinal))
        {
            var brackets = code["balanced? ".Length..];
            var depth = 0;
            var ok = true;
            foreach (var c in brackets)
            {
                depth += c == '(' ? 1 : -1;
                ok &= depth >= 0;
            }
            return ok && depth == 0 ? "yes" : "no";
        }
        var value = 0;
        if (code.Contains(";print(", StringComparison.Ordinal))
        {
            // "v=A;print(v+B)": substitute the variable.
            var semicolon = code.IndexOf(';', StringComparison.Ordinal);
            value = int.Parse(code[2..semicolon], CultureInfo.InvariantCulture);
            code = code[(semicolon + 1)..].Replace("(" + code[0], "(" + value.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
        }
        var inner = code["print(".Length..^1];
        if (inner.StartsWith("len(\"", StringComparison.Ordinal))
        {
            return (inner.Length - "len(\"\")".Length).ToString(CultureInfo.InvariantCulture);
        }
        if (inner.EndsWith("[::-1]", StringComparison.Ordinal))
        {
            return new string(inner[1..^7].Reverse().ToArray());
        }
        if (inner.StartsWith('"'))
        {
            var close = inner.LastIndexOf('"');
            var times = int.Parse(inner[(close + 2)..], CultureInfo.InvariantCulture);
            return string.Concat(Enumerable.Repeat(inner[1..close], times));
        }
        var op = inner.IndexOfAny(['+', '*']);
        var a = int.Parse(inner[..op], CultureInfo.InvariantCulture);
        var b = int.Parse(inner[(op + 1)..], CultureInfo.InvariantCulture);
        return (inner[op] == '+' ? a + b : a * b).ToString(CultureInfo.InvariantCulture);
    }

    [GeneratedRegex("[0-9]+")]
    private static partial Regex NumberPattern();
}
