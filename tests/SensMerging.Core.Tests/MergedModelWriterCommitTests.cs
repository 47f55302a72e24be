using SensMerging.Core.Models;

namespace SensMerging.Core.Tests;

/// <summary>What <see cref="MergedModelWriter"/> says when it cannot move a finished model into place must stay true.</summary>
public sealed class MergedModelWriterCommitTests
{
    [Fact]
    public void An_output_folder_that_appears_while_merging_fails_the_commit_with_a_message_that_stays_true()
    {
        using var dir = new SafeTensorsTempDir();
        var output = dir.File("out");
        string work;
        ModelFolderException refused;
        using (var writer = MergedModelWriter.Create(output, overwrite: false))
        {
            work = writer.WorkPath;
            writer.WriteModelCard(new ModelCard { Title = "t", Method = "linear" });
            Directory.CreateDirectory(output);
            File.WriteAllText(Path.Combine(output, "someone-elses.txt"), "x");
            refused = Assert.Throws<ModelFolderException>(writer.Commit);
        }

        // The writer removes its temporary folder, and the message says so rather than pointing at it.
        Assert.False(Directory.Exists(work));
        Assert.Contains($"temporary folder '{work}' is removed", refused.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("stays", refused.Message, StringComparison.Ordinal);
        Assert.Equal("x", File.ReadAllText(Path.Combine(output, "someone-elses.txt")));
    }
}
