using System.Globalization;
using SensMerging.Abstractions;
using SensMerging.Registry;

// Usage:
//   write <db> <count> <tag>   begin, update and complete <count> merges, listing between writes; prints "done <count>"
//   hang <db> [partial]        begin one merge (naming <partial> as its partial folder), print "begun <id>", then wait to be killed
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: write <db> <count> <tag> | hang <db>");
    return 2;
}
var mode = args[0];
var db = args[1];
using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = db, VerifyOutputFiles = false });
if (mode == "hang")
{
    var record = await registry.BeginAsync(Draft("hang", 0) with { PartialFolder = args.Length > 2 ? args[2] : null });
    Console.WriteLine("begun " + record.Id);
    Console.Out.Flush();
    await Task.Delay(Timeout.Infinite);
    return 0;
}
var count = int.Parse(args[2], CultureInfo.InvariantCulture);
var tag = args[3];
for (var i = 0; i < count; i++)
{
    var begun = await registry.BeginAsync(Draft(tag, i));
    await registry.UpdateAsync(begun.Id, r => r with
    {
        ScoreTables = [new ScoreTableRecord("sensitivity", ScorerKind.TaskSpecific, ["a", "b"], ["model.layers.0"], [[i], [1.0 / (i + 1)]])],
    });
    var sha = new string((char)('a' + (i % 6)), 64);
    await registry.CompleteAsync(begun.Id, new MergeOutputs
    {
        Folder = Path.Combine(Path.GetTempPath(), "worker-out", tag, i.ToString(CultureInfo.InvariantCulture)),
        Files = [new FileHash("model.safetensors", sha, 1000 + i)],
        TensorCount = 3,
    });
    var listed = await registry.ListAsync(new MergeQuery { Limit = 5 });
    if (listed.Count == 0)
    {
        Console.Error.WriteLine("list returned nothing after a write");
        return 1;
    }
    if (await registry.GetAsync(begun.Id) is not { Status: MergeStatus.Succeeded })
    {
        Console.Error.WriteLine($"record {begun.Id} not succeeded after completion");
        return 1;
    }
}
Console.WriteLine("done " + count.ToString(CultureInfo.InvariantCulture));
return 0;

static MergeRecord Draft(string tag, int i) => new()
{
    HostVersion = "worker",
    ConfigText = "merge_method: ties\n",
    Strategy = new PluginRef("sensmerging.strategies", "ties", "0.1.0", new string('0', 64), "1.0"),
    Inputs =
    [
        new ModelInput { Name = "base", Reference = "org/base@main", Role = ModelRole.Base, ResolvedCommit = new string('1', 40) },
        new ModelInput { Name = "expert-" + tag, Reference = "org/expert-" + tag, ResolvedCommit = new string('2', 40) },
    ],
    Seed = i,
    Tags = [tag],
};
