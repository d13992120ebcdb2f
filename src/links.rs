//! The `links` connector: `links.send`, the job of the step generated for a user task's
//! `email:`. It lives in the binary because it needs both the engine (to find the task and
//! store the links, through `ciclo_web::links::issue`) and the e-mail connector (to send): it
//! builds an ordinary e-mail job for `EmailConnector` rather than sending by itself, so the
//! SMTP, outbox, escaping and Message-ID rules are the same as for `send:` steps.

use std::sync::Arc;

use ciclo_connectors::EmailConnector;
use ciclo_engine::Value;
use ciclo_engine::runtime::{Connector, Engine, JobFuture, JobOutcome, JobRequest};
use ciclo_engine::value::Vars;
use ciclo_web::links::{LinkOptions, issue};

pub struct LinksConnector {
    pub engine: Arc<Engine>,
    pub email: Arc<EmailConnector>,
    pub options: Arc<LinkOptions>,
}

impl Connector for LinksConnector {
    fn call(&self, request: JobRequest) -> JobFuture {
        let engine = self.engine.clone();
        let email = self.email.clone();
        let options = self.options.clone();
        Box::pin(async move {
            if request.operation != "send" {
                return JobOutcome::Failed(format!(
                    "the links connector has no operation `{}`",
                    request.operation
                ));
            }
            let issuing = request.clone();
            let issued = match tokio::task::spawn_blocking(move || {
                issue(&engine, &options, &issuing)
            })
            .await
            {
                Ok(Ok(Some(issued))) => issued,
                Ok(Ok(None)) => {
                    tracing::info!(instance = %request.instance, "no approver address: no decision links sent");
                    let mut vars = Vars::new();
                    vars.insert("email_status".into(), Value::from("no-address"));
                    return JobOutcome::Done(vars);
                }
                Ok(Err(e)) => return JobOutcome::Failed(e),
                Err(e) => return JobOutcome::Failed(format!("the link writer stopped: {e}")),
            };
            // The template sees the instance's variables, plus `links`, `task` and `person`.
            let mut input = issued.vars.clone();
            let links: Vars = issued
                .links
                .iter()
                .map(|(decision, url)| (decision.clone(), Value::from(url.as_str())))
                .collect();
            input.insert("links".into(), Value::Map(links));
            let mut task = Vars::new();
            task.insert("title".into(), Value::from(issued.task.title.as_str()));
            input.insert("task".into(), Value::Map(task));
            let mut person = Vars::new();
            person.insert("email".into(), Value::from(issued.to.as_str()));
            person.insert(
                "name".into(),
                issued
                    .name
                    .as_deref()
                    .map(Value::from)
                    .unwrap_or(Value::Null),
            );
            input.insert("person".into(), Value::Map(person));
            input.insert("to".into(), Value::from(issued.to.as_str()));
            input.insert("template".into(), Value::from(issued.template.as_str()));
            input.remove("do_not_email");
            email.send(&JobRequest { input, ..request }).await
        })
    }
}
