import Testing

@testable import Gateway

@Suite("Member names as lenient servers read them")
struct LenientKeyTests {
    @Test("case, `_`, `-` and Go's non-ASCII folds (ſ for s, the Kelvin sign for k) read as the member; other letters do not")
    func spellings() {
        for key in ["taskId", "TASKID", "task_id", "task-id", "ta\u{017F}kId", "tas\u{212A}Id"] {
            #expect(LenientKey.matches(key, "taskid"), "\(key)")
        }
        for key in ["taskIds", "task", "tаskId", "ta\u{0161}kId", "task id", "taskıd"] {
            #expect(!LenientKey.matches(key, "taskid"), "\(key)")
        }
        #expect(LenientKey.isVariant("Name", of: "name") && LenientKey.isVariant("argument\u{017F}", of: "arguments"))
        #expect(!LenientKey.isVariant("name", of: "name") && !LenientKey.isVariant("names", of: "name"))
    }
}
